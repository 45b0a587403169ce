"""The Publish accordion in-process: its fields, the handler's notes (the token box is cleared
after every try), and which token is used: the pasted one, else a Space sign-in's own token
when its scopes allow writing repositories."""

from __future__ import annotations

import time
from types import SimpleNamespace

import gradio as gr
import peft
import pytest
from gradio.context import LocalContext
from jobs_support import make_database
from transformers import AutoModelForSequenceClassification

from app import access_mode, publish_view
from app.access_mode import AccessSettings
from app.auth import acting_as
from jobs import hub_publish, registry
from jobs.access import LOCAL, user
from jobs.db import dispose_engines

TOKEN = "hf_pastedTOKENneverShown42"


@pytest.fixture
def adapter(tmp_path, monkeypatch, minilm_path):
    monkeypatch.setenv("IA3_DATA_DIR", str(tmp_path / "data"))
    url, cleanup = make_database("sqlite", tmp_path)
    monkeypatch.setenv("IA3_DATABASE_URL", url)
    base = AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=2)
    config = peft.IA3Config(
        task_type="SEQ_CLS", target_modules=["key", "value"], feedforward_modules=[]
    )
    peft.get_peft_model(base, config).save_pretrained(tmp_path / "a")
    yield registry.register_adapter(tmp_path / "a", name="mine", db=url)
    dispose_engines()
    cleanup()


def test_the_accordion_has_the_agreed_fields():
    with gr.Blocks() as demo:
        picked = gr.Dropdown(choices=[], elem_id="adapter-select")
        shown = publish_view.build(picked)
    config = demo.get_config_file()
    props = {c["props"].get("elem_id"): c["props"] for c in config["components"] if "props" in c}
    for elem_id in ("publish-repo", "publish-token", "publish-private", "publish-button"):
        assert elem_id in props
    assert "publish-note" in props
    assert props["publish-token"]["type"] == "password"
    assert props["publish-private"]["value"] is True
    assert shown.private.value is True


def test_the_handler_explains_and_clears_the_token(adapter, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with acting_as(LOCAL):
        note, box = publish_view._publish(adapter, "me/mine", TOKEN, True)
        assert "HF_HUB_OFFLINE" in note and TOKEN not in note
        assert box.value == ""
        for nothing in (None, "", "1; drop table"):
            note, _ = publish_view._publish(nothing, "me/mine", TOKEN, True)
            assert "Pick one of your adapters" in note
        note, _ = publish_view._publish(adapter, "me/mine", "", True)
        assert "No Hugging Face token" in note
    with acting_as(user("bob")):
        note, _ = publish_view._publish(adapter, "bob/mine", TOKEN, True)
        assert f"No adapter #{adapter} among yours" in note


@pytest.fixture
def space_sign_in(monkeypatch):
    """A Space with Hugging Face sign-in, and a request whose session holds `info`."""
    before, tokens = access_mode.active(), []
    access_mode.configure(AccessSettings(mode="oauth"))

    def signed_in(scope: str, expires_in: float = 3600):
        info = {
            "access_token": "hf_oauth_session_token",
            "scope": scope,
            "expires_at": time.time() + expires_in,
            "userinfo": {"preferred_username": "ann"},
        }
        request = SimpleNamespace(request=SimpleNamespace(scope={"session": {"oauth_info": info}}))
        tokens.append(LocalContext.request.set(request))

    yield signed_in
    for token in reversed(tokens):
        LocalContext.request.reset(token)
    access_mode.configure(before)


def test_a_space_sign_in_lends_its_token_only_with_a_write_scope(space_sign_in):
    space_sign_in("openid profile manage-repos")
    assert publish_view._token("") == "hf_oauth_session_token"
    assert publish_view._token(TOKEN) == TOKEN  # a pasted token wins
    space_sign_in("openid profile")
    with pytest.raises(hub_publish.PublishError, match="manage-repos"):
        publish_view._token("")
    space_sign_in("openid profile manage-repos", expires_in=-10)
    assert publish_view._token("") is None
