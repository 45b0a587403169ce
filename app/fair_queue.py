"""Fair turns in Gradio's event queue: one signed-in person holds at most a few events in it.

Gradio's queue is one FIFO per endpoint: a person who sends hundreds of calls at once would
put everyone else behind all of them. Counting each person's events as a new one arrives
refuses the excess at once (before Gradio reads the request, so a flood costs the studio
little), and another person waits behind a handful at most.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from starlette.middleware import Middleware
from starlette.responses import JSONResponse

from app import uploads
from ia3engine.errors import ConfigError

logger = logging.getLogger(__name__)

VARIABLE = "IA3_MAX_EVENTS_PER_USER"
JOIN_ROUTES = ("/gradio_api/queue/join", "/gradio_api/call/")  # where an event is queued
DEFAULT = 16  # a page load fires several events at once; a script needs no more than this
BUSY = (
    "You already have {count} requests waiting or running in this studio, the most it takes "
    f"from one person at a time ({VARIABLE}={{limit}}). Wait for their answers, then send more."
)


def events_limit(env: Mapping[str, str] | None = None, *, multi_user: bool = True) -> int | None:
    """The per-person cap from IA3_MAX_EVENTS_PER_USER; 'none' or a local studio: no cap."""
    env = os.environ if env is None else env
    raw = (env.get(VARIABLE) or "").strip().lower()
    if raw in ("none", "off", "unlimited"):
        return None
    if not raw:
        return DEFAULT if multi_user else None
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(
            f"{VARIABLE}={raw!r} is not a positive whole number; set it like "
            f"{VARIABLE}={DEFAULT}, or {VARIABLE}=none for no limit."
        )
    return int(raw)


def pending_events(queue, username: str) -> int:
    """The events of `username` that Gradio holds now: waiting in a queue or running."""
    return sum(
        1 for event in list(queue.event_ids_to_events.values()) if event.username == username
    )


class EarlyRefusal:
    """ASGI middleware inside the Gradio app: a person at their cap is answered 429 (with
    Retry-After) before Gradio parses the request, checks the sign-in or touches the queue."""

    def __init__(self, app, gradio_app, queue, limit: int):
        self.app, self.gradio_app, self.queue, self.limit = app, gradio_app, queue, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"].removeprefix(scope.get("root_path") or "") or scope["path"]
            if path.startswith(JOIN_ROUTES):
                user = uploads.user_of(scope, self.gradio_app)
                count = pending_events(self.queue, user) if user else 0
                if count >= self.limit:
                    busy = BUSY.format(count=count, limit=self.limit)
                    refusal = JSONResponse({"detail": busy}, 429, {"Retry-After": "1"})
                    return await refusal(scope, receive, send)
        await self.app(scope, receive, send)


def guard(gradio_app, demo, limit: int | None) -> None:
    """Cap each person's events in `demo`'s queue, served by the mounted `gradio_app`."""
    if limit is None:
        return
    limit_events_per_user(demo, limit)
    gradio_app.user_middleware.append(
        Middleware(EarlyRefusal, gradio_app=gradio_app, queue=demo._queue, limit=limit)
    )


def limit_events_per_user(demo, limit: int | None) -> None:
    """Refuse a signed-in person's new event while they hold `limit` events in the queue.

    Wraps the queue's `push` (where Gradio admits an event, with the signed-in name), for any
    way in that EarlyRefusal does not see: Gradio's own 'queue full' answer (HTTP 503) with a
    sentence naming the limit.
    """
    queue = demo._queue
    if limit is None or queue is None:
        return
    admit = queue.push

    async def push(body, request, username):
        if username:
            count = pending_events(queue, username)
            if count >= limit:
                logger.info("refused an event from %s: %d events pending", username, count)
                return False, BUSY.format(count=count, limit=limit), "queue_full"
        return await admit(body, request, username)

    queue.push = push
