"""The playground's requests: compare the untuned base with adapters, or run a weighted mix.

Each request is checked (the caller may see every adapter it names; bounded input) and goes
to the shared models' scheduler (app.model_pool), which batches it with whatever else is
waiting for the same base: other people's playground requests and programs' API calls. The
scheduler answers in arrival order, so nobody is starved; each person has a few requests in
flight at most.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from app import access_mode, auth
from app.model_pool import POOL
from ia3engine.errors import AdapterError
from jobs import access
from jobs.errors import LimitError

logger = logging.getLogger(__name__)

MAX_PER_REQUEST = 8  # adapters compared or mixed in one request
MAX_INPUT_CHARS = 20_000  # one playground input


class InFlight:
    """How many playground requests each person has queued or running."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    @contextmanager
    def admitted(self, who: str, limit: int | None) -> Iterator[None]:
        with self._lock:
            count = self._counts.get(who, 0)
            if limit is not None and count >= limit:
                raise LimitError(
                    f"Too many requests in flight: you have {count} playground requests running "
                    f"or waiting, the most this studio allows per person "
                    f"(IA3_MAX_PREDICTS_PER_USER={limit}). Wait for an answer, then send the next."
                )
            self._counts[who] = count + 1
        try:
            yield
        finally:
            with self._lock:
                self._counts[who] -= 1
                if not self._counts[who]:
                    del self._counts[who]


IN_FLIGHT = InFlight()


@contextmanager
def _fair_share() -> Iterator[None]:
    """Admit the caller's request: at most IA3_MAX_PREDICTS_PER_USER in flight for a signed-in
    person (queued on the scheduler or running)."""
    actor = auth.current_actor()
    who = actor.name or ""
    limit = access_mode.active().limits.max_predicts_per_user if actor.signed_in else None
    with IN_FLIGHT.admitted(who, limit):
        yield


def _adapter_rows(adapter_ids: list[int]) -> list[dict]:
    """The adapters the caller named, each refused unless the caller may see it."""
    actor = auth.current_actor()
    rows = []
    for adapter_id in dict.fromkeys(int(i) for i in adapter_ids or []):
        info = access.get_adapter(adapter_id, actor=actor)
        keys = ("id", "name", "base_model", "task", "labels", "sha256")
        rows.append({k: getattr(info, k) for k in keys})
    return rows


def _check_text(text: str) -> None:
    if not (text or "").strip():
        raise AdapterError("The input is empty. Type a sentence to run through the models.")
    if len(text) > MAX_INPUT_CHARS:
        raise AdapterError(
            f"The input has {len(text):,} characters; the playground takes at most "
            f"{MAX_INPUT_CHARS:,}. Shorten it (models read only their first few hundred tokens)."
        )


def _check_count(adapter_ids) -> None:
    if len(list(adapter_ids or [])) > MAX_PER_REQUEST:
        raise AdapterError(
            f"{len(list(adapter_ids))} adapters in one request; pick at most {MAX_PER_REQUEST}."
        )


def compare(text: str, adapter_ids: list[int], include_base: bool = True) -> dict:
    """Outputs of the untuned base and of each adapter for one input, side by side."""
    _check_text(text)
    _check_count(adapter_ids)
    with _fair_share():
        return POOL.compare(text, _adapter_rows(adapter_ids), include_base=include_base)


def mix(text: str, adapter_ids: list[int], weights: list[float]) -> dict:
    """Output of the weighted mix of the adapters for one input."""
    _check_text(text)
    _check_count(adapter_ids)
    ids = list(dict.fromkeys(int(i) for i in adapter_ids or []))
    if len(ids) < 2:
        raise AdapterError("Pick at least two adapters to mix.")
    weights = [float(w) for w in (weights or [])]
    if len(weights) != len(ids) or not all(math.isfinite(w) for w in weights):
        raise AdapterError(
            f"Give one finite weight per adapter: {len(ids)} adapters, {len(weights)} weights."
        )
    with _fair_share():
        return POOL.mix(text, _adapter_rows(ids), weights)
