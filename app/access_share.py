"""Share links in the studio: turn an adapter's public page on or off, and show its link.

The link is /adapters/{id}?token=...; without the token (or after sharing stops) that page
answers 404, so people other than the owner learn nothing about the adapter.
"""

from __future__ import annotations

import html
import logging

import gradio as gr

from app import auth
from app.messages import explain, field_note
from jobs import access_shares

logger = logging.getLogger(__name__)


def link(adapter_id: int, token: str | None) -> str:
    """The page's path for a token ('' when not shared)."""
    return f"/adapters/{int(adapter_id)}?token={token}" if token else ""


def share_adapter(adapter_id: int) -> str:
    """Make a share link for one of your adapters; returns its path (/adapters/{id}?token=...).
    Anyone with the link can see the adapter's page and download it."""
    token = access_shares.share_adapter(int(adapter_id), actor=auth.current_actor())
    return link(adapter_id, token)


def unshare_adapter(adapter_id: int) -> int:
    """Stop sharing one of your adapters: its old link answers 404 from now on."""
    access_shares.unshare_adapter(int(adapter_id), actor=auth.current_actor())
    return int(adapter_id)


def share_link(adapter_id: int) -> str:
    """The current share link of one of your adapters ('' when it is not shared)."""
    token = access_shares.share_token(int(adapter_id), actor=auth.current_actor())
    return link(adapter_id, token)


# Registered with the studio's other endpoints (app.api.ENDPOINTS).
ENDPOINTS = [share_adapter, unshare_adapter, share_link]


def _shown(path: str) -> str:
    if not path:
        return field_note("Not shared: only you (and admins) can open this adapter.", "info")
    # A relative link: the browser shows and copies it with this studio's own address.
    anchor = f'<a href="{html.escape(path)}" target="_blank" rel="noopener">this link</a>'
    return (
        '<div class="note note-ok" role="status"><span class="note-icon">✓</span> Shared: '
        f"anyone with {anchor} can open and download the adapter (right-click it to copy).</div>"
    )


def _view(adapter_id):
    if adapter_id is None:
        return ""
    try:
        return _shown(share_link(int(adapter_id)))
    except Exception as error:  # the boundary: show the reason next to the buttons
        return field_note(explain(error))


def _act(action):
    def handler(adapter_id):
        if adapter_id is None:
            return field_note("Pick an adapter first.")
        try:
            action(int(adapter_id))
            return _shown(share_link(int(adapter_id)))
        except Exception as error:  # the boundary
            return field_note(explain(error))

    return handler


def build(selected: gr.Dropdown) -> None:
    """The sharing row under the Adapters tab's details, for the adapter in `selected`."""
    private = {"api_visibility": "private"}
    with gr.Accordion("Share link", open=False, elem_id="share"):
        with gr.Row():
            share = gr.Button("Make a share link", size="sm", elem_id="share-on")
            stop = gr.Button("Stop sharing", size="sm", variant="stop", elem_id="share-off")
        note = gr.HTML(elem_id="share-note")
    selected.change(_view, selected, note, **private)
    share.click(_act(share_adapter), selected, note, **private)
    stop.click(_act(unshare_adapter), selected, note, **private)
