"""Publish to the Hugging Face Hub: the accordion on an adapter's view and the action behind it.

The token is the one the person pastes (a password box, cleared after each try) or, on a Space
with Hugging Face sign-in, the sign-in's own token from their session. It goes to
jobs.hub_publish for this one request: never stored, logged or shown.
"""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

import gradio as gr
from gradio.context import LocalContext

from app import access_mode, auth
from app.messages import explain, field_note, note_box
from jobs import hub_publish

logger = logging.getLogger(__name__)

WRITE_SCOPES = ("manage-repos", "write-repos")  # what a sign-in needs to push to the Hub
NO_SCOPE = (
    "Your Hugging Face sign-in on this Space may not create repositories (the Space asks only "
    "for your name). Paste a token with write access instead, or ask the Space's owner to add "
    "`hf_oauth_scopes: [manage-repos]` to its README."
)


def _oauth_info() -> dict:
    """The Hub sign-in of this request (a Space with hf_oauth), if it is still valid."""
    if access_mode.active().mode != "oauth":
        return {}
    request = LocalContext.request.get(None)
    if auth.signed_in_name(request) is None:  # expired, forged or absent
        return {}
    underlying = getattr(request, "request", None) or request
    scope = getattr(underlying, "scope", None)
    session = scope.get("session") if isinstance(scope, dict) else None
    info = (session or {}).get("oauth_info") or {}
    return info if float(info.get("expires_at") or 0) > time.time() else {}


def _token(pasted: str | None) -> str | None:
    """The pasted token, else the Space sign-in's token when it may write repositories."""
    if (pasted or "").strip():
        return pasted
    info = _oauth_info()
    if not info.get("access_token"):
        return None
    if not set(str(info.get("scope") or "").split()) & set(WRITE_SCOPES):
        raise hub_publish.PublishError(NO_SCOPE)
    return str(info["access_token"])


def publish_adapter(
    adapter_id: int | None, repo: str | None, token: str | None = "", private: bool = True
) -> dict:
    """Push one of this person's adapters to a Hub repository (private unless asked otherwise);
    returns {"repo", "url", "private"}."""
    try:
        adapter = int(adapter_id)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise hub_publish.PublishError("Pick one of your adapters first.") from None
    actor = auth.current_actor()
    oauth = access_mode.active().mode == "oauth" and actor.signed_in
    return hub_publish.publish(
        adapter,
        repo,
        token=_token(token),
        actor=actor,
        private=private is not False,
        default_owner=actor.name if oauth else None,
    )


def _publish(adapter_id, repo, token, private):
    cleared = gr.Textbox(value="")  # the token leaves the page with each try
    try:
        done = publish_adapter(adapter_id, repo, token, private)
    except Exception as error:
        return field_note(explain(error)), cleared
    seen = "private: only you (and your organization) see it" if done["private"] else "public"
    note = f"Published to {done['url']} ({seen})."
    return field_note(note, "ok"), cleared


def build(selected: gr.Dropdown) -> SimpleNamespace:
    """The accordion (call inside the adapter's view); `selected` holds the adapter id."""
    oauth = access_mode.active().mode == "oauth"
    hint = (
        "Leave empty to use your Hugging Face sign-in, or paste a token with write access."
        if oauth
        else "A token with write access (huggingface.co/settings/tokens); used once, never kept."
    )
    with gr.Accordion("Publish to the Hugging Face Hub", open=False, elem_id="publish"):
        repo = gr.Textbox(
            label="Repository",
            placeholder="my-adapter" if oauth else hub_publish.EXAMPLE,
            max_length=hub_publish.MAX_REPO,
            elem_id="publish-repo",
        )
        token = gr.Textbox(
            label="Hugging Face token",
            type="password",
            info=hint,
            max_length=hub_publish.MAX_TOKEN,
            elem_id="publish-token",
        )
        private = gr.Checkbox(value=True, label="Private repository", elem_id="publish-private")
        button = gr.Button("Publish", elem_id="publish-button")
        note = note_box("publish-note")
    button.click(
        _publish,
        [selected, repo, token, private],
        [note, token],
        api_visibility="private",
    )
    return SimpleNamespace(repo=repo, token=token, private=private, button=button, note=note)
