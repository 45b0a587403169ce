"""API keys in the studio: make one (its key shown once), see yours, revoke one.

Only people who may own things see the section: a signed-in person, or the local user of a
local studio. Every action goes through jobs.api_keys as the current person, which refuses
anyone else and keys that are not theirs (the same words as a missing key).
"""

from __future__ import annotations

import logging

import gradio as gr

from app import auth
from app.messages import explain, field_note
from jobs import api_keys
from jobs.access import LOCAL

logger = logging.getLogger(__name__)

HEADERS = ["Name", "Key starts", "Created", "Last used", "State"]
HOW_TO = (
    "Programs call the HTTP API (`/v1/classify`, `/v1/generate`, `/v1/adapters`; see `/docs`) "
    "with the header `Authorization: Bearer <key>`. A key acts as you: keep it secret."
)


def _when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "never"


def _may_own() -> bool:
    actor = auth.current_actor()
    return actor.signed_in or actor == LOCAL


def _rows_and_choices():
    keys = api_keys.list_keys(actor=auth.current_actor())
    rows = [
        [
            k.name,
            f"ia3_{k.prefix}_…",
            _when(k.created_at),
            _when(k.last_used_at),
            "live" if k.live else f"revoked {_when(k.revoked_at)}",
        ]
        for k in keys
    ]
    choices = [(f"{k.name} (ia3_{k.prefix}_…)", k.id) for k in keys if k.live]
    return rows, choices


def _listing(note: str = "", secret: str = ""):
    """The table, the revoke choices, the note and the key box (shown only with a new key)."""
    if not _may_own():
        return [], gr.Dropdown(choices=[], value=None), note, gr.Textbox(value="", visible=False)
    rows, choices = _rows_and_choices()
    return (
        rows,
        gr.Dropdown(choices=choices, value=None),
        note,
        gr.Textbox(value=secret, visible=bool(secret)),
    )


def create(name: str):
    try:
        info, key = api_keys.create_key(name, actor=auth.current_actor())
    except Exception as error:  # the boundary: the reason under the button
        return _listing(field_note(explain(error)))
    note = field_note(f"Key {info.name!r} made. Copy it now: it is shown only this once.", "ok")
    return _listing(note, key)


def revoke(key_id):
    if key_id is None:
        return _listing(field_note("Pick a key to revoke."))
    try:
        info = api_keys.revoke_key(int(key_id), actor=auth.current_actor())
    except Exception as error:
        return _listing(field_note(explain(error)))
    return _listing(field_note(f"Key {info.name!r} revoked: it no longer works.", "ok"))


def _show_section():
    return gr.Accordion(visible=_may_own())


def build(demo: gr.Blocks, tab_select) -> None:
    """The "API keys" accordion (inside the Adapters tab); `tab_select` (the tab's select
    listener) re-reads the list each time the tab is opened."""
    private = {"api_visibility": "private"}
    with gr.Accordion("API keys", open=False, visible=False, elem_id="apikeys") as section:
        gr.Markdown(HOW_TO)
        with gr.Row():
            name = gr.Textbox(
                label="New key's name",
                placeholder="e.g. nightly-script",
                max_length=100,
                elem_id="apikey-name",
                scale=3,
            )
            make = gr.Button("Make a key", size="sm", elem_id="apikey-create", scale=1)
        secret = gr.Textbox(
            label="Your new key (shown once)",
            interactive=False,
            visible=False,
            buttons=["copy"],
            elem_id="apikey-secret",
        )
        table = gr.Dataframe(
            headers=HEADERS, label="Your keys", interactive=False, elem_id="apikey-table"
        )
        with gr.Row():
            # Custom values: the choices a page was last sent may be older than the session
            # Gradio checks against; revoke_key refuses any id that is not the person's own.
            pick = gr.Dropdown(
                label="Key to revoke",
                choices=[],
                value=None,
                allow_custom_value=True,
                elem_id="apikey-pick",
                scale=3,
            )
            stop = gr.Button("Revoke", size="sm", variant="stop", elem_id="apikey-revoke", scale=1)
        note = gr.HTML(elem_id="apikey-note")
    outputs = [table, pick, note, secret]
    demo.load(_show_section, None, section, **private)
    tab_select(_listing, None, outputs, **private)
    make.click(create, name, outputs, **private)
    stop.click(revoke, pick, outputs, **private)
