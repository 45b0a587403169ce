"""Per-token streaming out of batched generation: each streaming request's pieces arrive one
by one and join to exactly the text the same request gets whole, also when its batch holds
other requests (other adapters, other lengths, not streaming). Pieces are counted, never timed."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import pytest
import torch
import train_models as tm
from transformers import GenerationConfig

from app.inference import InferenceServer, TooLarge
from ia3engine import TrainSpec
from ia3engine.errors import IA3Error
from ia3engine.serve.batcher import Batcher, Request
from ia3engine.serve.predict import Predictor, base_row
from ia3engine.training.run import train
from ia3engine.training.streamer import RowStreamer
from jobs import access

PROMPTS = ["Say it again : the food was good", "the book", "Say it again : the hotel was dull"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    data = tm.write_instructions(root / "i.jsonl")
    found = tm.tiny_adapters(
        root,
        (
            ("g", "gpt2", data, "generate"),
            ("h", "gpt2", tm.write_instructions(root / "h.jsonl", 12), "generate"),
        ),
    )
    # A random tiny T5 ends at once; its generation config makes it write a few tokens first.
    found["t5"] = tm.save_tiny("t5", root / "t5")
    GenerationConfig(
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, min_new_tokens=4
    ).save_pretrained(found["t5"])
    spec = dict(steps=3, lr=0.2, batch_size=8, eval_every=0, device="cpu", seed=7)
    train(TrainSpec(model=found["t5"], data=data, task="generate", out_dir=str(root / "t"), **spec))
    found["t"] = root / "t"
    return found


class Bytes:
    """A tokenizer whose tokens are UTF-8 bytes: a character may take several tokens."""

    clean_up_tokenization_spaces = False

    def decode(self, ids, skip_special_tokens=True):
        return bytes(i for i in ids if i > 0).decode("utf-8", errors="replace")


def test_the_streamer_splits_rows_skips_the_prompt_and_holds_half_characters():
    pieces: dict[int, list[str]] = {0: [], 2: []}
    streamer = RowStreamer(Bytes(), {row: pieces[row].append for row in pieces})
    streamer.put(torch.tensor([[0, 65], [66, 67], [0, 0]]))  # left-padded prompts: skipped
    rows = [" café ok ", "ignored", " ü "]
    encoded = [list(text.encode()) for text in rows]
    width = max(len(e) for e in encoded)
    for step in range(width):
        streamer.put(torch.tensor([e[step] if step < len(e) else 0 for e in encoded]))
    streamer.end()
    assert "".join(pieces[0]) == "café ok" and "".join(pieces[2]) == "ü"
    assert all("\ufffd" not in piece and piece for piece in pieces[0] + pieces[2])
    assert len(pieces[0]) > 2  # piece by piece, not once at the end
    assert streamer.tokens.keys() == {0, 2}  # the row nobody streams is not decoded


def test_a_rerun_after_a_failed_batch_does_not_send_text_twice():
    got = []
    request = Request(["p"], ["g"], on_piece=lambda row, text: got.append((row, text)))
    first = request.stream_row(0)
    first("ab")  # the batch fails after this
    second = request.stream_row(0)
    for piece in ("a", "b", "cd"):
        second(piece)
    assert got == [(0, "ab"), (0, "cd")]


def test_a_failing_callback_stops_its_stream_but_not_the_batch():
    def broken(row, text):
        raise RuntimeError("gone")

    request = Request(["p"], ["g"], on_piece=broken)
    request.stream_row(0)("a")
    assert request.on_piece is None


def _streamed(batcher, text, name, tokens):
    pieces = []
    future = batcher.submit(
        [text], [name], max_new_tokens=tokens, on_piece=lambda row, t: pieces.append(t)
    )
    return future, pieces


@pytest.mark.parametrize("base", ["gpt2", "t5"])
def test_streamed_pieces_join_to_the_text_of_the_same_request_in_a_mixed_batch(folders, base):
    p = Predictor(folders[base], task="generate", device="cpu")
    names = ["g", "h"] if base == "gpt2" else ["t"]
    for name in names:
        p.add_adapter(name, folders[name])
    rows = [(PROMPTS[0], names[0]), (PROMPTS[1], names[-1]), (PROMPTS[2], base_row(names[0]))]
    alone = [p.predict([text], [name], max_new_tokens=6)[0]["text"] for text, name in rows]
    batcher = Batcher(p, start=False)
    streams = [_streamed(batcher, text, name, 6) for text, name in rows]
    quiet = batcher.submit([PROMPTS[1]], [names[0]], max_new_tokens=6)  # not streamed
    batcher.start()
    for (future, pieces), want in zip(streams, alone, strict=True):
        assert future.result(120)[0]["text"] == want
        assert "".join(pieces) == want
        if len(want.split()) > 1:
            assert len(pieces) > 1
    assert (
        quiet.result(120)[0]["text"]
        == p.predict([PROMPTS[1]], [names[0]], max_new_tokens=6)[0]["text"]
    )
    assert sum(len(want.split()) > 1 for want in alone) >= 2  # the test saw real streams
    assert batcher.stats()["rows_per_batch"] == [4]  # all in one generate call
    batcher.close()


class StreamingPool:
    """A stand-in pool: its worker sends two pieces, then answers or fails."""

    settings = type("Settings", (), {"max_rows_per_user": 8})()

    def __init__(self, fail: bool):
        self.fail = fail

    def submit(self, base_model, task, texts, names, sources, *, max_new_tokens, on_piece):
        future = Future()

        def work():
            future.set_running_or_notify_cancel()
            on_piece(0, "one")
            on_piece(0, " two")
            if self.fail:
                future.set_exception(IA3Error("The model failed; retry."))
            else:
                future.set_result([{"text": "one two three"}])

        threading.Thread(target=work).start()
        return future


def test_generate_stream_yields_pieces_as_they_come_then_the_rest_or_the_error():
    server = InferenceServer(StreamingPool(fail=False))
    pieces = server.generate_stream(access.LOCAL, "base", "hi", 3, model="tiny")
    assert list(pieces) == ["one", " two", " three"]  # the last from the answer itself
    failing = InferenceServer(StreamingPool(fail=True)).generate_stream(
        access.LOCAL, "base", "hi", 3, model="tiny"
    )
    assert next(failing) == "one" and next(failing) == " two"
    with pytest.raises(IA3Error, match="model failed"):
        next(failing)
    with pytest.raises(TooLarge):  # checks raise when called, before any piece
        server.generate_stream(access.LOCAL, "base", "hi", 10_000, model="tiny")
