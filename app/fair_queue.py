"""Fair turns in Gradio's event queue: one signed-in person holds at most a few events in it.

Gradio's queue is one FIFO per endpoint: a person who sends hundreds of calls at once would
put everyone else behind all of them. Counting each person's events when they join (before
anything runs) refuses the excess at once, so another person waits behind a handful at most.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from ia3engine.errors import ConfigError

logger = logging.getLogger(__name__)

VARIABLE = "IA3_MAX_EVENTS_PER_USER"
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


def limit_events_per_user(demo, limit: int | None) -> None:
    """Refuse a signed-in person's new event while they hold `limit` events in the queue.

    Wraps the queue's `push` (where Gradio admits an event, with the signed-in name): the
    refusal is Gradio's own 'queue full' answer (HTTP 503) with a sentence naming the limit.
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
