"""Publishing an adapter to the Hugging Face Hub, up to the network call.

The upload itself cannot run here (no network, no Hub account): these tests check the folder
and model card that would be pushed (PEFT loads it), the owner check, the repository name rules,
the messages a person sees offline, without a token, or when the Hub's address refuses or
answers 401/403 (a local socket, not a Hub), and that the token reaches no message, log or
database.
"""

from __future__ import annotations

import argparse
import http.server
import json
import logging
import socket
import threading

import huggingface_hub.constants
import peft
import pytest
import torch
import yaml
from jobs_support import make_database
from train_models import train_adapter
from transformers import AutoModelForSequenceClassification

from ia3engine.training.card import hub_metadata, model_card, split_card, with_hub_metadata
from jobs import cli, hub_publish, registry
from jobs.access import LOCAL, Actor, user
from jobs.db import dispose_engines
from jobs.errors import AccessDeniedError
from jobs.hub_publish import PublishError, publish, repo_id, staged_folder

TOKEN = "hf_SECRETtokenThatMustNeverShow123"
ANN, BOB, ROOT = user("ann"), user("bob"), user("root", admins={"root"})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, minilm_path):
    """A one-step MiniLM classifier trained from a CSV in a folder that names this machine."""
    tmp = tmp_path_factory.mktemp("server-side-secret-folder")
    return train_adapter(tmp / "adapter", ("neg", "pos"))


@pytest.fixture
def sqlite_db(tmp_path, monkeypatch):
    monkeypatch.setenv("IA3_DATA_DIR", str(tmp_path / "data"))
    url, cleanup = make_database("sqlite", tmp_path)
    yield url
    dispose_engines()
    cleanup()


def _front(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


# The model card ------------------------------------------------------------------------------


def test_training_card_front_matter_is_hub_metadata_with_the_metrics():
    info = {
        "task": "classify",
        "kind": "encoder",
        "labels": ["neg", "pos"],
        "base_model": "minilm",
        "metrics": {"accuracy": 0.875, "f1": 0.8, "loss": float("nan"), "done": True},
        "spec": {"name": "reviews: v1", "data": "/srv/secret/reviews.csv"},
    }
    card = model_card(info)
    meta = _front(card)
    assert meta["library_name"] == "peft"
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert {"ia3", "peft", "text-classification"} <= set(meta["tags"])
    assert meta["pipeline_tag"] == "text-classification"
    (entry,) = meta["model-index"]
    assert entry["name"] == "reviews: v1"
    (result,) = entry["results"]
    assert result["task"]["type"] == "text-classification"
    assert result["dataset"]["name"] == "reviews.csv"  # the file's name, not where it was
    assert {m["type"]: m["value"] for m in result["metrics"]} == {"accuracy": 0.875, "f1": 0.8}
    assert "/srv/secret" not in card and "# reviews: v1" in card


@pytest.mark.parametrize(
    ("kind", "task", "pipeline"),
    [
        ("causal", "generate", "text-generation"),
        ("seq2seq", "generate", "text2text-generation"),
        ("causal", "classify", "text-classification"),
    ],
)
def test_pipeline_tag_follows_what_the_adapter_does(kind, task, pipeline):
    meta = hub_metadata({"kind": kind, "task": task, "base_model": "gpt2"})
    assert meta["pipeline_tag"] == pipeline and "model-index" not in meta


def test_an_imported_card_keeps_its_own_metadata_and_gains_the_hubs():
    mine = "---\nlicense: mit\ntags: [sentiment]\nbase_model: old\n---\n\n# Mine\n\nMy words.\n"
    meta = hub_metadata({"kind": "encoder", "task": "classify", "base_model": "bert-base"})
    merged = with_hub_metadata(mine, meta)
    front, body = split_card(merged)
    assert front["license"] == "mit" and front["base_model"] == "bert-base"
    assert {"sentiment", "ia3", "peft"} <= set(front["tags"])
    assert body.strip() == "# Mine\n\nMy words."
    broken = with_hub_metadata("---\n: [unclosed\n---\nbody\n", meta)
    assert split_card(broken)[0]["library_name"] == "peft" and broken.endswith("body\n")
    assert split_card(with_hub_metadata("plain text", meta))[1].strip() == "plain text"


# The folder that would be pushed -------------------------------------------------------------


def test_the_staged_folder_holds_exactly_the_pushed_files_and_peft_loads_it(
    trained, sqlite_db, minilm_path
):
    adapter = registry.register_adapter(trained, name="reviews", owner="ann", db=sqlite_db)
    with staged_folder(adapter, actor=ANN, db=sqlite_db) as folder:
        names = sorted(p.name for p in folder.iterdir())
        assert names == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
        texts = [(folder / n).read_bytes() for n in names]
        for blob in texts:
            assert str(trained.parent).encode() not in blob and b"server-side-secret" not in blob
        config = json.loads((folder / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
        meta = _front((folder / "README.md").read_text())
        assert meta["library_name"] == "peft" and meta["pipeline_tag"] == "text-classification"
        stored = json.loads((trained / "training_info.json").read_text())["metrics"]
        (result,) = meta["model-index"][0]["results"]
        numbers = {k: v for k, v in stored.items() if type(v) in (int, float) and v == v}
        assert {m["type"]: m["value"] for m in result["metrics"]} == pytest.approx(
            numbers, rel=1e-5
        )
        base = AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=2)
        loaded = peft.PeftModel.from_pretrained(base, str(folder))
        ours = peft.PeftModel.from_pretrained(
            AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=2),
            str(trained),
        )
        batch = {"input_ids": torch.tensor([[101, 2023, 3185, 2001, 2204, 102]])}
        with torch.no_grad():
            assert torch.allclose(loaded.eval()(**batch).logits, ours.eval()(**batch).logits)
    assert not folder.exists()  # the temporary copy is gone


def test_an_adapter_made_on_a_server_folder_is_published_without_the_path(
    trained, sqlite_db, tmp_path
):
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        (folder / name).write_bytes((trained / name).read_bytes())
    config = json.loads((folder / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "/srv/models/private-base"
    (folder / "adapter_config.json").write_text(json.dumps(config))
    adapter = registry.register_adapter(folder, name="odd", db=sqlite_db)
    with staged_folder(adapter, actor=LOCAL, db=sqlite_db) as staged:
        for path in staged.iterdir():
            assert b"/srv/models" not in path.read_bytes(), path.name
        meta = _front((staged / "README.md").read_text())
        assert meta["library_name"] == "peft" and "ia3" in meta["tags"]
        assert "base_model" not in meta


# Who may publish -----------------------------------------------------------------------------


def test_only_the_owner_may_publish_and_others_hear_it_is_missing(trained, sqlite_db):
    adapter = registry.register_adapter(trained, name="anns", owner="ann", db=sqlite_db)

    def refusal(actor, adapter_id):
        with pytest.raises(AccessDeniedError) as error:
            publish(adapter_id, "someone/x", token=TOKEN, actor=actor, db=sqlite_db)
        return str(error.value).replace(str(adapter_id), "N")

    missing = refusal(BOB, 99999)
    assert refusal(BOB, adapter) == missing and "No adapter #N among yours" in missing
    assert refusal(ROOT, adapter) == missing  # an admin manages it, but does not republish it
    assert refusal(Actor(None, shared_adapter=adapter), adapter) == missing  # a share link
    with pytest.raises(PublishError, match="offline"):  # ann (and the local user) get further
        publish(adapter, "ann/reviews", token=TOKEN, actor=ANN, db=sqlite_db)
    with pytest.raises(PublishError, match="offline"):
        publish(adapter, "ann/reviews", token=TOKEN, actor=LOCAL, db=sqlite_db)


# Repository names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "good", ["ann/reviews", "Ann-2/my_adapter.v1", "a/b", "org/" + "x" * 96, "  ann/r  "]
)
def test_valid_repository_names(good):
    assert repo_id(good) == good.strip()


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("", "Name the repository"),
        ("reviews", "owner/name"),
        ("ann/reviews/extra", "owner/name"),
        ("ann/re--views", "not a valid Hub name"),
        ("ann/re..views", "not a valid Hub name"),
        ("ann/-reviews", "not a valid Hub name"),
        ("ann/reviews.git", "not a valid Hub name"),
        ("ann/rev iews", "not a valid Hub name"),
        ("ann/" + "x" * 97, "not a valid Hub name"),
        ("ann/" + "x" * 300, "characters; keep it short"),
        ("../etc/passwd", "owner/name"),
        ("ann/<script>", "not a valid Hub name"),
    ],
)
def test_invalid_repository_names_say_what_to_type(bad, says):
    with pytest.raises(PublishError, match=says):
        repo_id(bad)


def test_a_bare_name_goes_under_the_signed_in_persons_name():
    assert repo_id("reviews", default_owner="ann") == "ann/reviews"
    assert repo_id("team/reviews", default_owner="ann") == "team/reviews"


# Messages before and at the network ----------------------------------------------------------


def test_no_token_and_offline_messages(trained, sqlite_db, monkeypatch):
    adapter = registry.register_adapter(trained, name="anns", owner="ann", db=sqlite_db)
    for empty in (None, "", "   "):
        with pytest.raises(PublishError, match="No Hugging Face token"):
            publish(adapter, "ann/reviews", token=empty, actor=ANN, db=sqlite_db)
    with pytest.raises(PublishError, match="not a Hugging Face token") as error:
        publish(adapter, "ann/reviews", token="hf_a b" + "x" * 20, actor=ANN, db=sqlite_db)
    assert "xxxx" not in str(error.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PublishError) as error:
        publish(adapter, "ann/reviews", token=TOKEN, actor=ANN, db=sqlite_db)
    assert "HF_HUB_OFFLINE" in str(error.value) and TOKEN not in str(error.value)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once it is closed


class _Answers(http.server.BaseHTTPRequestHandler):
    status = 401

    def _answer(self):
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps({"error": "refused"}).encode())

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def online(monkeypatch):
    """huggingface_hub allowed to try the network (it only ever reaches 127.0.0.1 here)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


def test_a_hub_address_that_refuses_gives_the_network_message(trained, sqlite_db, online, caplog):
    adapter = registry.register_adapter(trained, name="anns", owner="ann", db=sqlite_db)
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    with caplog.at_level(logging.DEBUG), pytest.raises(PublishError) as error:
        publish(adapter, "ann/x", token=TOKEN, actor=ANN, endpoint=endpoint, db=sqlite_db)
    assert str(error.value) == hub_publish.UNREACHABLE
    assert TOKEN not in caplog.text


@pytest.mark.parametrize(
    ("status", "says"), [(401, "refused the token"), (403, "write to ann/x"), (404, "namespace")]
)
def test_hub_refusals_name_the_fix_and_the_token_stays_out_of_messages_logs_and_database(
    trained, sqlite_db, online, caplog, status, says
):
    adapter = registry.register_adapter(trained, name="anns", owner="ann", db=sqlite_db)
    handler = type("Refuses", (_Answers,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with caplog.at_level(logging.DEBUG), pytest.raises(PublishError) as error:
            publish(adapter, "ann/x", token=TOKEN, actor=ANN, endpoint=endpoint, db=sqlite_db)
    finally:
        server.shutdown()
        server.server_close()
    assert says in str(error.value) and f"({status})" in str(error.value)
    assert TOKEN not in str(error.value) and TOKEN not in caplog.text
    dispose_engines()
    database = sqlite_db.removeprefix("sqlite:///")
    assert TOKEN.encode() not in open(database, "rb").read()


# ia3 adapters publish ------------------------------------------------------------------------


@pytest.fixture
def run(sqlite_db, monkeypatch, capsys):
    """One `ia3 ...` command line against the test's SQLite database: (code, stdout, stderr)."""
    monkeypatch.setenv("IA3_DATABASE_URL", sqlite_db)
    parser = argparse.ArgumentParser(prog="ia3")
    cli.add_commands(parser.add_subparsers(dest="command", required=True))

    def invoke(*argv):
        args = parser.parse_args([str(a) for a in argv])
        code = args.func(args)
        return (code, *capsys.readouterr())

    return invoke


def test_the_cli_writes_the_folder_it_would_push_and_needs_a_token(
    run, trained, sqlite_db, tmp_path, monkeypatch
):
    adapter = registry.register_adapter(trained, name="reviews", db=sqlite_db)
    code, out, _ = run("adapters", "publish", adapter, "me/reviews", "--dry-run", tmp_path / "o")
    assert code == 0 and "me/reviews" in out
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == sorted(hub_publish.PUSHED)
    assert run("adapters", "publish", adapter, "me/re--views")[0] == 1
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    code, _, err = run("adapters", "publish", adapter, "me/reviews")
    assert code == 1 and "HF_TOKEN" in err and "Traceback" not in err
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out, err = run("adapters", "publish", adapter, "me/reviews")
    assert code == 1 and "HF_HUB_OFFLINE" in err and TOKEN not in out + err
