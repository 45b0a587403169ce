"""The HTTP API for programs: /v1/classify, /v1/generate (optionally as server-sent events) and
/v1/adapters, authorised by an API key (jobs.api_keys) in `Authorization: Bearer <key>`; a
share link's token in `X-IA3-Share` adds that one adapter, read-only (jobs.access_shares).

`add_routes(app, server)` puts it on a FastAPI app: the studio's (app.main.create_app, before
the Gradio mount) or the one `ia3 serve` runs alone (app.http_serve). `server` is the
process's inference server (app.inference.SERVER); tests pass a stand-in with the same
methods. Every answer is JSON naming the problem and the fix, never a traceback:
401 no or bad key, 404 an adapter that is missing or not the caller's (the same body), 413 too
much text, 429 a full queue (with Retry-After), 400/422 bad input, 500 anything else (logged).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from app.inference import QueueFull, TooLarge, Unprocessable
from app.inference_checks import MAX_LABEL_CHARS, MAX_LABELS
from app.messages import scrub
from app.serving import MAX_INPUT_CHARS
from ia3engine.errors import IA3Error
from ia3engine.serve.predict_file import DEFAULT_NEW_TOKENS
from ia3engine.serve.predict_file import MAX_NEW_TOKENS as _ENGINE_NEW_TOKENS
from jobs import access_shares, api_keys
from jobs.access import LOCAL, Actor
from jobs.errors import AccessDeniedError

logger = logging.getLogger(__name__)

PREFIX = "/v1"
MAX_TEXTS = 1024  # texts in one classify call, whatever IA3_SERVE_MAX_TEXTS says (413 over it)
MAX_CHARS = MAX_INPUT_CHARS  # characters in one text or prompt
MAX_NEW_TOKENS = _ENGINE_NEW_TOKENS
MAX_BODY_BYTES = 2 * 1024 * 1024  # a declared body larger than this is refused unread
NO_KEY = (
    "This API needs an API key: send the header `Authorization: Bearer <key>`. Make a key in "
    "the studio (Adapters tab, API keys)."
)
BAD_KEY = (
    "This API key is not valid: it may be mistyped or revoked. Make a new one in the studio "
    "(Adapters tab, API keys)."
)
SHARE_HEADER = "X-IA3-Share"  # a share link (or its token): that adapter, read-only
FAILED = "The server failed on this request; its log says why. Try again, or tell its admin."


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    adapter: str = Field(
        min_length=1, max_length=200, description='an adapter id, your name for one, or "base"'
    )
    texts: list[str] = Field(min_length=1, max_length=MAX_TEXTS)
    model: str | None = Field(
        None, max_length=500, description='the base model, with adapter "base"'
    )
    labels: list[Annotated[str, Field(min_length=1, max_length=MAX_LABEL_CHARS)]] | None = Field(
        None,
        min_length=2,
        max_length=MAX_LABELS,
        description='with adapter "base": the labels to choose between (rank classification)',
    )


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    adapter: str = Field(
        min_length=1, max_length=200, description='an adapter id, your name for one, or "base"'
    )
    prompt: str = Field(min_length=1)
    max_new_tokens: int = Field(DEFAULT_NEW_TOKENS, ge=1, le=MAX_NEW_TOKENS)
    stream: bool = Field(False, description="answer as server-sent events, one per piece of text")
    model: str | None = Field(
        None, max_length=500, description='the base model, with adapter "base"'
    )


@dataclass(frozen=True)
class KeyPolicy:
    """Who a key may act for here: admins by name; `allowed` (None: anyone) limits who may;
    `local_keys`: keys the local user made act as the local user (only on a one-person host)."""

    admins: frozenset[str] = frozenset()
    allowed: frozenset[str] | None = None
    local_keys: bool = True


class ApiError(Exception):
    """An answer other than 200: its status, message and extra headers."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def _no_adapter(name: str) -> ApiError:
    # The same words whether the adapter is missing or someone else's: ids cannot be probed.
    shown = name if len(name) <= 60 else name[:57] + "..."
    return ApiError(
        404, f"No adapter {shown!r} among those you may use; GET /v1/adapters lists them."
    )


def _as_api_error(error: Exception, adapter: str = "") -> ApiError:
    """The answer for an error the inference server raised."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, AccessDeniedError):
        return _no_adapter(adapter)
    if isinstance(error, QueueFull):
        wait = max(1, math.ceil(float(error.retry_after_s or 1)))
        reason = scrub(str(error)).strip() or "The server is busy: its queue is full."
        message = f"{reason} Try again in {wait} s."  # the reason: the queue, or your share
        return ApiError(429, message, {"Retry-After": str(wait)})
    if isinstance(error, TooLarge):
        return ApiError(413, scrub(str(error)))
    if isinstance(error, Unprocessable):
        return ApiError(422, scrub(str(error)))
    if isinstance(error, IA3Error):
        return ApiError(400, scrub(str(error)))
    logger.exception("HTTP API request failed", exc_info=error)
    return ApiError(500, FAILED)


def _body(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _check_chars(texts: list[str], what: str) -> None:
    for index, text in enumerate(texts):
        if len(text) > MAX_CHARS:
            where = f" (#{index + 1})" if len(texts) > 1 else ""
            raise ApiError(
                413,
                f"The {what}{where} has {len(text)} characters; at most {MAX_CHARS} fit. "
                "Shorten it or split it into several.",
            )


def _share_token(value: str) -> str:
    """The token of a share link pasted whole (/adapters/12?token=...) or the token alone."""
    value = value.strip()[:1000]
    return value.split("token=", 1)[1].split("&", 1)[0] if "token=" in value else value


def build_router(server, policy: KeyPolicy | None = None) -> APIRouter:
    """The /v1 routes, calling `server` (an InferenceServer or a stand-in)."""
    policy = policy or KeyPolicy()

    def caller(
        request: Request,
        share: str | None = Header(
            None,
            alias=SHARE_HEADER,
            description="a share link (or its token): that adapter too, read-only",
        ),
    ) -> Actor:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiError(401, NO_KEY, {"WWW-Authenticate": "Bearer"})
        actor = api_keys.resolve(key.strip(), admins=policy.admins)
        if actor is None or (actor == LOCAL and not policy.local_keys):
            raise ApiError(401, BAD_KEY, {"WWW-Authenticate": "Bearer"})
        allowed = policy.allowed
        if actor.signed_in and allowed is not None and actor.name not in allowed | policy.admins:
            raise ApiError(401, BAD_KEY, {"WWW-Authenticate": "Bearer"})
        return access_shares.with_share(actor, _share_token(share)) if share else actor

    router = APIRouter(prefix=PREFIX, tags=["inference"])

    @router.get("/adapters", summary="The adapters your key may use (your own and shared ones)")
    def adapters(actor: Actor = Depends(caller)) -> dict:
        try:
            return {"adapters": server.adapters(actor)}
        except Exception as error:
            raise _as_api_error(error) from None

    @router.post("/classify", summary="Labels and probabilities for each text")
    def classify(body: ClassifyRequest, actor: Actor = Depends(caller)) -> dict:
        _check_chars(body.texts, "text")
        extra = {"model": body.model} if body.model else {}
        if body.labels is not None:
            extra["labels"] = list(body.labels)
        try:
            return server.classify(actor, body.adapter, list(body.texts), **extra)
        except Exception as error:
            raise _as_api_error(error, body.adapter) from None

    @router.post("/generate", summary="Text generated after a prompt (stream=true: as events)")
    def generate(body: GenerateRequest, actor: Actor = Depends(caller)):
        _check_chars([body.prompt], "prompt")
        extra = {"model": body.model} if body.model else {}
        args = (actor, body.adapter, body.prompt, body.max_new_tokens)
        try:
            if not body.stream:
                return server.generate(*args, **extra)
            pieces = iter(server.generate_stream(*args, **extra))
            first = next(pieces, None)  # refusals (404, 429) come before the stream starts
        except Exception as error:
            raise _as_api_error(error, body.adapter) from None
        return StreamingResponse(
            _sent_events(first, pieces, body.adapter),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return router


def _event(data: dict, name: str | None = None) -> str:
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {json.dumps(data)}\n\n"


def _events(first: str | None, rest: Iterator[str], adapter: str) -> Iterator[str]:
    """Server-sent events: `data: {"text": piece}` per piece, then `event: done`; a failure
    midway ends the stream with `event: error` and its message."""
    try:
        if first is not None:
            yield _event({"text": first})
        for piece in rest:
            yield _event({"text": piece})
    except Exception as error:
        yield _event({"error": _as_api_error(error, adapter).message}, "error")
        return
    yield _event({}, "done")


async def _sent_events(first: str | None, pieces, adapter: str) -> AsyncIterator[str]:
    """_events for Starlette, which cancels this when the client disconnects (it listens for
    the disconnect while the stream is sent): each event is awaited in a worker thread that
    may be abandoned, so the cancel lands at once, and `pieces.stop()` (app.inference's
    TextStream) then ends the generation of a row nobody reads any more."""
    events = _events(first, pieces, adapter)
    try:
        while (
            event := await anyio.to_thread.run_sync(next, events, None, abandon_on_cancel=True)
        ) is not None:
            yield event
    finally:
        stop = getattr(pieces, "stop", None)
        if stop is not None:
            stop()  # a no-op when the generation is done


class BodyLimit:
    """ASGI middleware: a /v1 request body over `limit` bytes is refused with 413 before it is
    parsed, whether it declares its length or comes in chunks (counted as they arrive), and
    before the key is checked, so nobody can make the server hold a large body."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX + "/"):
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send)
        seen, refused, started = 0, False, False

        async def counted():
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                seen += len(message.get("body", b""))
                if seen > self.limit:  # answer now (unless the app has); it sees the client go
                    refused = True
                    if not started:
                        await self._refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def unless_refused(message):
            nonlocal started
            if not refused:  # the app's own answer to a refused body is dropped
                started = started or message["type"] == "http.response.start"
                await send(message)

        await self.app(scope, counted, unless_refused)

    async def _refuse(self, send) -> None:
        message = f"The request body is over {self.limit // 1024} KiB; send less text per call."
        body = json.dumps({"error": message}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def add_routes(app: FastAPI, server, policy: KeyPolicy | None = None) -> None:
    """Put the /v1 API on `app` with its JSON error answers (other paths keep theirs) and its
    body limit (BodyLimit)."""
    app.add_middleware(BodyLimit)
    app.include_router(build_router(server, policy))

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        return _body(error.status, error.message, error.headers)

    default_validation = app.exception_handlers.get(RequestValidationError)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, error: RequestValidationError):
        if not request.url.path.startswith(PREFIX + "/") and default_validation is not None:
            return await default_validation(request, error)
        return _body(422, _validation_message(error))


def _validation_message(error: RequestValidationError) -> str:
    """What is wrong with the request, field by field, without echoing the input back."""
    problems = []
    for item in error.errors()[:5]:
        where = ".".join(str(part) for part in item.get("loc", ()) if part != "body") or "body"
        problems.append(f"{where}: {item.get('msg', 'invalid')}")
    return "The request is not valid: " + "; ".join(problems) + ". /docs shows each field."
