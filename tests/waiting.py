"""The one way tests wait: poll until something is true, or fail saying what never happened."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(
    predicate: Callable[[], object],
    timeout_s: float = 60.0,
    what: str | Callable[[], str] = "condition",
    poll_s: float = 0.05,
):
    """Poll `predicate` until it returns something true (returned) or fail after `timeout_s`.

    `what` names the awaited thing in the failure message; a callable is asked at the moment
    of failure (e.g. for a log's tail). An exception from `predicate` (an assertion that the
    wait can no longer succeed) propagates at once.
    """
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() >= deadline:
            described = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {described}")
        time.sleep(poll_s)
    return value
