"""Which files in Gradio's upload cache belong to whom, when several people share the studio.

A file argument is accepted only when this signed-in user uploaded it (or the studio handed it
to them as a download); `/gradio_api/file=` serves cache files only to the person they belong to.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path

import anyio
from gradio.utils import get_upload_folder
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse

from app import access_mode, auth
from ia3engine.errors import DataError
from jobs import quota

logger = logging.getLogger(__name__)

UPLOAD_ROUTE = "/gradio_api/upload"
FILE_PREFIXES = ("/gradio_api/file=", "/gradio_api/file/")  # the second: Gradio's older route
HANDED_OUT = "ia3-"  # folders of copies handed out for download (app.access_files)
KEEP_S = 6 * 3600.0  # uploads are removed this long after they were made (at the next upload)
PER_USER = 2000  # newest files remembered per person; older ones must be uploaded again
USERS = 10_000  # people remembered at once (a Space may see many)
NOT_YOURS = (
    "That file was not uploaded by you in this session. Upload it again (the page's file box, "
    "or gradio_client's handle_file); files already on the server cannot be named."
)

_lock = threading.Lock()
_owned: OrderedDict[str, OrderedDict[str, int]] = OrderedDict()  # user -> path -> bytes


def _key(path: str | Path) -> str:
    return os.path.realpath(str(path))  # symlinks resolved, so a link cannot stand in


def upload_folder() -> Path:
    """Gradio's cache of uploaded and handed-out files (GRADIO_TEMP_DIR)."""
    return Path(_key(get_upload_folder()))


def record(user: str, path: str | Path, size: int = 0) -> None:
    """Remember that `user` may use and fetch `path` (bounded, newest kept)."""
    key = _key(path)
    with _lock:
        files = _owned.setdefault(user, OrderedDict())
        _owned.move_to_end(user)
        files[key] = int(size)
        files.move_to_end(key)
        while len(files) > PER_USER:
            files.popitem(last=False)
        while len(_owned) > USERS:
            _owned.popitem(last=False)


def owns(user: str | None, path: str | Path) -> bool:
    if not user:
        return False
    with _lock:
        return _key(path) in _owned.get(user, {})


def forget(path: str | Path) -> None:
    """Drop a file that was removed from every person's list."""
    key = _key(path)
    with _lock:
        for files in _owned.values():
            files.pop(key, None)


def uploaded_bytes(user: str) -> int:
    """Bytes of this person's uploads still in the cache (copies handed out to them are the
    studio's own files, counted where they come from)."""
    with _lock:
        paths = list(_owned.get(user, {}))
    return sum(
        file_size(path) for path in paths if not Path(path).parent.name.startswith(HANDED_OUT)
    )


# File arguments of handlers -------------------------------------------------------------------


def _given_path(file) -> str | None:
    if file is None:
        return None
    if isinstance(file, dict):
        return file.get("path")
    return getattr(file, "path", None) or str(file)


def uploaded_file(file, samples: dict[str, str] | None = None) -> str | None:
    """The local path of a file argument (FileData, its dict form, a path, or a sample's name).

    With several users it must be a file this person uploaded (or was handed), or a sample
    named as such; a path on the server is refused whatever its form.
    """
    given = _given_path(file)
    if not given:
        return None
    if samples and given in samples:
        return samples[given]
    if not access_mode.active().multi_user:
        return given
    name = auth.current_actor().name
    if not owns(name, given):
        logger.warning("refused a file argument not uploaded by %s", name)
        raise DataError(NOT_YOURS)
    return _key(given)


# The routes: record uploads, serve cache files to their owner only ----------------------------


def user_of(scope, gradio_app) -> str | None:
    """The signed-in name of a raw request, found the way Gradio's own routes find it."""
    settings = access_mode.active()
    request = Request(scope)
    if settings.mode == "password":
        token = request.cookies.get(f"access-token-{gradio_app.cookie_id}") or request.cookies.get(
            f"access-token-unsecure-{gradio_app.cookie_id}"
        )
        return gradio_app.tokens.get(token) if token else None
    return auth.signed_in_name(request, settings)


class FileGuard:
    """ASGI middleware inside the Gradio app (so it sees the sign-in cookie and session):
    records what each person uploads and serves cache files to their owner only."""

    def __init__(self, app, gradio_app):
        self.app, self.gradio_app = app, gradio_app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not access_mode.active().multi_user:
            return await self.app(scope, receive, send)
        path = scope["path"].removeprefix(scope.get("root_path") or "") or scope["path"]
        if scope["method"] == "POST" and path.rstrip("/") == UPLOAD_ROUTE:
            return await self._upload(scope, receive, send)
        prefix = next((p for p in FILE_PREFIXES if path.startswith(p)), None)
        if scope["method"] in ("GET", "HEAD") and prefix:
            given = path.removeprefix(prefix)  # decoded once, as Gradio reads it
            if not given.startswith(("http://", "https://")):
                inside = Path(_key(given)).is_relative_to(upload_folder())
                if inside and not owns(user_of(scope, self.gradio_app), given):
                    response = PlainTextResponse("File not found.", status_code=404)
                    return await response(scope, receive, send)
        return await self.app(scope, receive, send)

    async def _upload(self, scope, receive, send):
        user = user_of(scope, self.gradio_app)
        if not user:  # a visitor who has not signed in stores nothing (OAuth leaves this open)
            response = PlainTextResponse("Sign in to upload files.", status_code=401)
            return await response(scope, receive, send)
        status, headers, body = 500, [], b""

        async def keep(message):
            nonlocal status, headers, body
            if message["type"] == "http.response.start":
                status, headers = message["status"], message.get("headers", [])
            elif message["type"] == "http.response.body":
                body += message.get("body", b"")

        await self.app(scope, receive, keep)  # Gradio's background move is done when it returns
        if status == 200:
            paths = [str(p) for p in json.loads(body or b"[]")]
            refusal = await anyio.to_thread.run_sync(_admit_upload, user, paths)
            if refusal:
                await PlainTextResponse(refusal, status_code=413)(scope, receive, send)
                return
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _admit_upload(user: str, paths: list[str]) -> str | None:
    """Record the uploads, or remove them and say why when they take the user over quota."""
    _sweep(user)
    sizes = {path: file_size(path) for path in paths if not owns(user, path)}  # new files only
    refusal = quota.refusal(user, sum(sizes.values()), uploaded_bytes(user))
    if refusal:
        _remove_unowned(sizes)
        return refusal
    for path in paths:
        record(user, path, sizes.get(path, 0))
    return None


def _remove_unowned(paths) -> None:
    """Remove refused uploads, except a file someone else may use: Gradio names an upload by
    its bytes, so two people who upload the same file get the same path."""
    with _lock:  # nobody records one of them between the check and the removal
        for path in paths:
            key = _key(path)
            if not any(key in files for files in _owned.values()):
                Path(path).unlink(missing_ok=True)


def _sweep(user: str) -> None:
    """Remove this person's uploads older than KEEP_S: a queued job has its own copy in the
    database by then, and the page asks for the file again after a reload."""
    cutoff = time.time() - KEEP_S
    with _lock:
        paths = list(_owned.get(user, {}))
    for path in paths:
        try:
            old = os.path.getmtime(path) < cutoff
        except OSError:  # gone already
            old = True
        if old:
            Path(path).unlink(missing_ok=True)
            forget(path)


def file_size(path: str) -> int:
    """Bytes of a file in the cache, 0 when it is gone."""
    # The route's background task has moved a spooled upload into place by the time it returns.
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def guard(gradio_app) -> None:
    """Put FileGuard inside the mounted Gradio app (call after mount_gradio_app, before the
    first request): innermost, after Gradio's own session and CORS middleware."""
    quota.limit_bytes()  # a mistyped IA3_MAX_STORAGE_MB stops the start, not the first upload
    if gradio_app.middleware_stack is not None:
        raise RuntimeError("the Gradio app has started; guard it before it serves")
    gradio_app.user_middleware.append(Middleware(FileGuard, gradio_app=gradio_app))
