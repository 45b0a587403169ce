"""The handler boundary: turns exceptions into messages a person can act on.

IA3Error messages are shown as written; anything else becomes a short notice and its
traceback goes to the studio log, never to the page.
"""

from __future__ import annotations

import functools
import html
import logging
from collections.abc import Callable

import gradio as gr

from ia3engine.errors import IA3Error

logger = logging.getLogger(__name__)


def explain(error: BaseException) -> str:
    """The text a person sees for `error`; unexpected errors are logged with the traceback."""
    if isinstance(error, IA3Error):
        return str(error)
    if isinstance(error, gr.Error):
        return error.message
    logger.exception("unexpected error in a studio action", exc_info=error)
    first_line = (str(error).strip().splitlines() or [""])[0][:200]
    detail = f": {first_line}" if first_line else ""
    return (
        f"Something went wrong ({type(error).__name__}{detail}). "
        "The details are in the studio log; try again or change the input."
    )


def shown_as_error(fn: Callable) -> Callable:
    """Wrap an action so any failure reaches the page (or API client) as a gr.Error."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as error:  # the boundary: nothing else escapes to the page
            raise gr.Error(explain(error), print_exception=False) from error

    return wrapper


def field_note(text: str | None, kind: str = "error") -> str:
    """HTML for the small message shown under a field ('' clears it).

    kind: "error" (a problem to fix), "ok" (a check passed) or "info" (a hint).
    """
    if not text:
        return ""
    lines = [html.escape(line.strip()) for line in str(text).splitlines() if line.strip()]
    icon = {"error": "⚠", "ok": "✓", "info": "ℹ"}.get(kind, "")
    body = (
        lines[0] if len(lines) == 1 else "<ul>" + "".join(f"<li>{x}</li>" for x in lines) + "</ul>"
    )
    return f'<div class="note note-{kind}" role="{"alert" if kind == "error" else "status"}">' + (
        f'<span class="note-icon">{icon}</span> {body}</div>'
    )


def note_box(elem_id: str | None = None) -> gr.HTML:
    """The empty message area placed under a field."""
    return gr.HTML(elem_id=elem_id, elem_classes=["field-note"], padding=False)
