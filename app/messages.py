"""The handler boundary: turns exceptions into messages a person can act on.

IA3Error messages are shown as written; anything else becomes a short notice and its
traceback goes to the studio log, never to the page.
"""

from __future__ import annotations

import functools
import html
import logging
import re
from collections.abc import Callable

import gradio as gr

from app import access_mode
from ia3engine.errors import IA3Error

logger = logging.getLogger(__name__)


# A URL with a scheme (database, Hub, ...) and an absolute path on this machine (POSIX or Windows).
_URL = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*)://[^\s'\"<>]+")
_PATH = re.compile(r"(?<![\w.:/-])(?:/[^\s'\"<>/:;,()]+){2,}/?|\b[A-Za-z]:\\[^\s'\"<>]+")
_PAGES = ("/adapters/", "/gradio_api/", "/login", "/logout")  # the studio's own pages
PATH_FIELDS = ("data", "eval_data", "out_dir")  # TrainSpec fields that may hold server paths


def _url(match: re.Match) -> str:
    if match.group(1).lower() in ("http", "https"):
        return re.sub(r"//[^/@\s]*@", "//", match.group(0))  # no user:password
    return "the database"  # postgresql://user:pw@host/db, sqlite:////srv/data/jobs.db, ...


def _path(match: re.Match) -> str:
    text = match.group(0)
    if text.startswith(_PAGES):
        return text
    return re.split(r"[/\\]", text.rstrip("/\\"))[-1]  # the file's name, not where it lives


def scrub(text: str) -> str:
    """`text` without URLs that carry secrets and, when several people share the studio,
    without server paths (each becomes its file name); the local user sees their own paths."""
    text = _URL.sub(_url, str(text))
    return _PATH.sub(_path, text) if access_mode.active().multi_user else text


def file_name(value):
    """A dataset or folder as a person should see it: an absolute path becomes its name;
    a Hub id ("owner/name") or a sample name stays as it is."""
    if not isinstance(value, str) or not value:
        return value
    if value.startswith("/") or re.match(r"^[A-Za-z]:\\", value):
        return re.split(r"[/\\]", value.rstrip("/\\"))[-1]
    return value


def shown_spec(spec: dict | None) -> dict | None:
    """A job's spec for the page or an API client: its file fields by name only."""
    if not isinstance(spec, dict):
        return spec
    return {k: file_name(v) if k in PATH_FIELDS else v for k, v in spec.items()}


def explain(error: BaseException) -> str:
    """The text a person sees for `error`; unexpected errors are logged with the traceback.

    No message shows a server path, a database URL or a stack frame (see scrub)."""
    return scrub(_explain(error))


def _explain(error: BaseException) -> str:
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
