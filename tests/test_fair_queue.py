"""One person's flood is refused as it joins Gradio's queue; other people still get in."""

import asyncio
from types import SimpleNamespace

import pytest

from app import fair_queue
from ia3engine.errors import ConfigError


class FakeQueue:
    """The part of gradio.queueing.Queue the cap reads: events held, and `push` admitting one."""

    def __init__(self):
        self.event_ids_to_events = {}

    async def push(self, body, request, username):
        event_id = f"e{len(self.event_ids_to_events)}"
        self.event_ids_to_events[event_id] = SimpleNamespace(username=username)
        return True, event_id, "success"


def _push(queue, username):
    return asyncio.run(queue.push(None, None, username))


def test_a_person_at_the_cap_is_refused_while_another_gets_in():
    queue = FakeQueue()
    fair_queue.limit_events_per_user(SimpleNamespace(_queue=queue), 3)
    assert [_push(queue, "ann")[0] for _ in range(3)] == [True, True, True]
    ok, message, state = _push(queue, "ann")
    assert (ok, state) == (False, "queue_full")
    assert "IA3_MAX_EVENTS_PER_USER=3" in message and "3 requests" in message
    assert _push(queue, "bob")[0] is True
    queue.event_ids_to_events.pop("e0")  # one of ann's events finished
    assert _push(queue, "ann")[0] is True


def test_requests_without_a_name_and_studios_without_a_cap_are_not_counted():
    queue = FakeQueue()
    fair_queue.limit_events_per_user(SimpleNamespace(_queue=queue), 1)
    assert all(_push(queue, None)[0] for _ in range(5))
    open_queue = FakeQueue()
    fair_queue.limit_events_per_user(SimpleNamespace(_queue=open_queue), None)
    assert all(_push(open_queue, "ann")[0] for _ in range(5))


def test_the_cap_setting():
    assert fair_queue.events_limit({}) == fair_queue.DEFAULT
    assert fair_queue.events_limit({}, multi_user=False) is None
    assert fair_queue.events_limit({"IA3_MAX_EVENTS_PER_USER": "4"}, multi_user=False) == 4
    assert fair_queue.events_limit({"IA3_MAX_EVENTS_PER_USER": "none"}) is None
    for bad in ("0", "-2", "lots", "2.5"):
        with pytest.raises(ConfigError, match="IA3_MAX_EVENTS_PER_USER"):
            fair_queue.events_limit({"IA3_MAX_EVENTS_PER_USER": bad})
