"""The inference server programs call (and the HTTP API serves): classify and generate with
any adapter a person may use, batched with everyone else's requests on the same base.

Who asks is checked here, on the server: an adapter is one of the actor's own (any for an
admin) or the one a share link lends; another person's adapter gets the same refusal as a
missing one (jobs.access). Every input is bounded (texts per request, characters per text,
new tokens); the models, their schedulers and the adapter cache are app.model_pool's, shared
with the studio's playground. docs/serving.md describes the settings.
"""

from __future__ import annotations

import functools
import queue
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import TimeoutError as FutureTimeout

from app.adapter_cache import LabelsSource
from app.inference_checks import (
    TooLarge,
    Unprocessable,
    check_labels,
    check_new_tokens,
    check_text,
    check_texts,
)
from app.model_pool import BASE_NAME, POOL, source_of
from ia3engine.errors import AdapterError, DataError
from ia3engine.serve.batcher import QueueFull
from ia3engine.serve.predict import NO_HEAD
from ia3engine.serve.predict_file import DEFAULT_NEW_TOKENS
from ia3engine.training.loading import base_kind
from jobs import access, access_limits
from jobs.errors import AccessDeniedError

__all__ = ["SERVER", "InferenceServer", "QueueFull", "TextStream", "TooLarge", "Unprocessable"]

BASE = "base"  # the adapter argument naming the untuned base model (with `model`)
MAX_NAME_CHARS = 200  # an adapter or model argument
ANSWER_TIMEOUT_S = 600  # a request waits at most this long for its batch
DONE = object()  # ends a stream's queue of pieces


def _no_adapter(adapter: str) -> AccessDeniedError:
    shown = adapter if len(adapter) <= 40 else adapter[:40] + "..."
    return AccessDeniedError(
        f"No adapter '{shown}' among yours; GET /v1/adapters lists the adapters you may use."
    )


def _info(info) -> dict:
    return {
        "id": info.id,
        "name": info.name,
        "base_model": info.base_model,
        "task": info.task,
        "labels": list(info.labels or []),
        "created_at": info.created_at.isoformat() if info.created_at else None,
        "owner": info.owner,
        "shared": False,  # True: lent by a share link (X-IA3-Share), not the caller's own
    }


@functools.lru_cache(maxsize=64)
def _kind(base_model: str) -> str:
    """encoder, causal or seq2seq (from the model's config; a base's kind never changes)."""
    return base_kind(base_model)


def _stop(future) -> None:
    """Stop a request: cancelled while queued, its rows ended while generating (Batcher)."""
    getattr(future, "stop", future.cancel)()


class TextStream:
    """A streamed generation: iterate for its pieces of text; stop() when the reader has gone
    (from any thread, at any time; it does nothing once the generation is done)."""

    def __init__(self, pieces: Iterator[str], stop):
        self._pieces, self._stop = pieces, stop

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def stop(self) -> None:
        self._stop()


class InferenceServer:
    """classify / generate / generate_stream / adapters, each for one actor (jobs.access)."""

    def __init__(self, pool=None, *, timeout_s: float = ANSWER_TIMEOUT_S):
        self.pool = pool or POOL
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._rows: dict[str, int] = {}  # a signed-in person's rows queued or running

    def _submit(self, actor, base_model, task, texts, names, sources, **kwargs):
        """Queue rows for `actor`: a signed-in person holds at most IA3_SERVE_MAX_ROWS_PER_USER
        rows queued or running, so one person's flood cannot fill the queue for everyone."""
        who, rows = actor.name if actor.signed_in else None, len(texts)
        if who is not None:
            limit = self.pool.settings.max_rows_per_user
            with self._lock:
                held = self._rows.get(who, 0)
                if held + rows > limit:
                    raise QueueFull(
                        f"You have {held} rows queued or running; the most one person may have "
                        f"is {limit} (IA3_SERVE_MAX_ROWS_PER_USER). Wait for answers, then send "
                        "more.",
                        1,
                    )
                self._rows[who] = held + rows
        try:
            future = self.pool.submit(base_model, task, texts, names, sources, **kwargs)
        except BaseException:
            self._release(who, rows)
            raise
        future.add_done_callback(lambda _: self._release(who, rows))
        return future

    def _release(self, who, rows: int) -> None:
        if who is None:
            return
        with self._lock:
            self._rows[who] -= rows
            if not self._rows[who]:
                del self._rows[who]

    # ---- what the actor may use --------------------------------------------------------------
    def adapters(self, actor) -> list[dict]:
        """The adapters the actor may use: their own (everyone's for an admin) and the one a
        share link lends them."""
        found = {info.id: _info(info) for info in access.list_adapters(actor)}
        if actor.shared_adapter is not None and actor.shared_adapter not in found:
            try:
                lent = access.get_adapter(actor.shared_adapter, actor=actor)
            except AccessDeniedError:
                return list(found.values())  # the shared adapter is gone
            # what its share page shows: not who owns it
            found[lent.id] = {**_info(lent), "owner": None, "shared": True}
        return list(found.values())

    def _adapter(self, actor, adapter):
        """The registry adapter `adapter` names (an id or a name) if the actor may use it."""
        if not isinstance(adapter, str) or not adapter.strip() or len(adapter) > MAX_NAME_CHARS:
            raise DataError(
                f'"adapter" must be an adapter id, an adapter name (at most {MAX_NAME_CHARS} '
                f'characters) or "{BASE}".'
            )
        adapter = adapter.strip()
        if re.fullmatch(r"#?\d{1,12}", adapter):
            try:
                return access.get_adapter(int(adapter.lstrip("#")), actor=actor)
            except AccessDeniedError:
                raise _no_adapter(adapter) from None
        named = [a for a in access.list_adapters(actor, search=adapter) if a.name == adapter]
        own = [a for a in named if actor.signed_in and a.owner == actor.name]
        named = own or named
        if not named and actor.shared_adapter is not None:
            shared = self.adapters(actor)
            named = [
                access.get_adapter(a["id"], actor=actor) for a in shared if a["name"] == adapter
            ]
        if not named:
            raise _no_adapter(adapter)
        if len(named) > 1:
            ids = ", ".join(str(a.id) for a in named[:10])
            raise AdapterError(
                f"{len(named)} adapters are named '{adapter}' (ids {ids}); name one by its id."
            )
        return named[0]

    def _base_model(self, actor, model, task: str) -> str:
        """The base `model` names, if the actor may run it untuned for `task`: a base of one of
        their adapters (of a generate adapter, to generate), so no request loads any model."""
        if not isinstance(model, str) or not model.strip() or len(model) > MAX_NAME_CHARS:
            raise DataError(
                f'adapter "{BASE}" needs "model": the base model to run, as your adapters name '
                "it (GET /v1/adapters shows each adapter's base_model)."
            )
        model = model.strip()
        if actor != access.LOCAL:
            kinds = "generate adapter" if task == "generate" else "adapter"
            bases = {
                a["base_model"]
                for a in self.adapters(actor)
                if task != "generate" or a["task"] == "generate"
            }
            if model not in bases:
                raise AccessDeniedError(
                    f"'{model[:80]}' is not the base model of any {kinds} you may use; the "
                    f"untuned base is served for the bases of your {kinds}s "
                    "(GET /v1/adapters shows them)."
                )
            access_limits.check_model(model)
        return model

    # ---- requests ----------------------------------------------------------------------------
    def classify(self, actor, adapter: str, texts: list[str], *, model=None, labels=None) -> dict:
        """Labels and probabilities for each text from one adapter, or from the untuned base
        (`adapter` "base", `model` and `labels`: rank classification over the labels)."""
        texts = check_texts(texts, self.pool.settings.max_texts)
        labels = check_labels(labels)
        if isinstance(adapter, str) and adapter.strip() == BASE:
            return self._classify_base(actor, model, texts, labels)
        info = self._adapter(actor, adapter)
        if info.task != "classify":
            raise AdapterError(
                f"Adapter #{info.id} '{info.name}' generates text; send it to generate instead."
            )
        if labels is not None and set(labels) != set(info.labels or []):
            raise Unprocessable(
                f"Adapter #{info.id} '{info.name}' answers with its own labels "
                f'({", ".join(info.labels or [])}), not those sent; leave out "labels", or '
                f'classify with "{BASE}" to choose between labels of your own.'
            )
        source = source_of({"id": info.id, "sha256": info.sha256})
        future = self._submit(
            actor, info.base_model, "classify", texts, [source.key] * len(texts), [source]
        )
        results = self._wait(future)
        return {
            "adapter": {"id": info.id, "name": info.name},
            "base_model": info.base_model,
            "results": [{"label": r["label"], "probs": r["probs"]} for r in results],
        }

    def _classify_base(self, actor, model, texts: list[str], labels) -> dict:
        if labels is None:
            raise DataError(
                f'adapter "{BASE}" classifies by the labels you send: add "labels", like '
                '["positive", "negative"] (the untuned base has none of its own).'
            )
        base_model = self._base_model(actor, model, "classify")
        if _kind(base_model) == "encoder":
            raise Unprocessable(NO_HEAD.format(model="base model"))
        source = LabelsSource(tuple(labels))
        future = self._submit(
            actor, base_model, "classify", texts, [source.key] * len(texts), [source]
        )
        results = self._wait(future)
        return {
            "adapter": BASE,
            "base_model": base_model,
            "results": [{"label": r["label"], "probs": r["probs"]} for r in results],
        }

    def _submit_generate(self, actor, adapter, prompt, max_new_tokens, model, on_piece=None):
        prompt = check_text(prompt, "the prompt")
        max_new_tokens = check_new_tokens(max_new_tokens)
        if isinstance(adapter, str) and adapter.strip() == BASE:
            base_model = self._base_model(actor, model, "generate")
            names, sources, shown = [BASE_NAME], (), BASE
        else:
            info = self._adapter(actor, adapter)
            if info.task != "generate":
                raise AdapterError(
                    f"Adapter #{info.id} '{info.name}' is a classifier; send it to classify."
                )
            source = source_of({"id": info.id, "sha256": info.sha256})
            base_model, names, sources = info.base_model, [source.key], (source,)
            shown = {"id": info.id, "name": info.name}
        future = self._submit(
            actor,
            base_model,
            "generate",
            [prompt],
            names,
            sources,
            max_new_tokens=max_new_tokens,
            on_piece=on_piece,
        )
        return future, {"adapter": shown, "base_model": base_model}

    def generate(
        self,
        actor,
        adapter: str,
        prompt: str,
        max_new_tokens: int = DEFAULT_NEW_TOKENS,
        *,
        model=None,
    ) -> dict:
        """The adapter's (or the untuned base's) continuation of `prompt`."""
        future, head = self._submit_generate(actor, adapter, prompt, max_new_tokens, model)
        return {**head, "text": self._wait(future)[0]["text"]}

    def generate_stream(
        self,
        actor,
        adapter: str,
        prompt: str,
        max_new_tokens: int = DEFAULT_NEW_TOKENS,
        *,
        model=None,
    ) -> TextStream:
        """The text in pieces, as the model generates it (in a batch with other requests).
        Checks and queueing happen now, so their errors raise before the first piece; a later
        failure raises from the iterator. The pieces join to what generate() answers. Its
        stop() (the client went away) ends the row at the next step: the batch goes on without
        it, and the rows it held count against nobody once the batch is done."""
        arrived: queue.Queue = queue.Queue()  # pieces, then DONE (from the scheduler's thread)
        future, _ = self._submit_generate(
            actor, adapter, prompt, max_new_tokens, model, lambda _row, text: arrived.put(text)
        )
        future.add_done_callback(lambda _: arrived.put(DONE))
        return TextStream(self._pieces(future, arrived), lambda: _stop(future))

    def _pieces(self, future, arrived: queue.Queue) -> Iterator[str]:
        deadline, sent = time.monotonic() + self.timeout_s, ""
        try:
            while True:
                try:
                    piece = arrived.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    raise self._overloaded() from None
                if piece is DONE:
                    break
                sent += piece
                yield piece
            text = self._wait(future)[0]["text"]
            if text.startswith(sent) and len(text) > len(sent):
                yield text[len(sent) :]  # anything the streamer held back to the end
        finally:  # the reader stopped early (or timed out): nobody wants the rest
            if not future.done():
                _stop(future)

    def _wait(self, future) -> list:
        try:
            return future.result(self.timeout_s)
        except FutureTimeout:
            _stop(future)
            raise self._overloaded() from None

    def _overloaded(self) -> QueueFull:
        return QueueFull(
            f"No answer within {self.timeout_s:g} s: the server is overloaded. Retry later.", 30
        )

    def stats(self) -> dict:
        """Per loaded base: batches run, rows per batch, queue, cache bytes."""
        return self.pool.stats()


SERVER = InferenceServer()
