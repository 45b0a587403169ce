"""Password sign-in as Gradio calls it: throttled per client address, checked off the event loop.

Wrong passwords pause the address that sent them (for that name, then for every name), never
the name itself: a stranger's guesses cannot lock a real user out of their own account.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import threading
import time
from collections import OrderedDict

import anyio
from fastapi import HTTPException

from app import access_mode, access_users, web_guard

logger = logging.getLogger(__name__)

WINDOW_S = 900.0  # failures older than this are forgotten
FREE_PER_NAME = 5  # wrong passwords for one name from one address before pauses start
FREE_PER_ADDRESS = 20  # wrong passwords from one address, any names, before pauses start
MAX_PAUSE_S = 300.0  # pauses double with each further failure, up to this
NAME_SLOW_AFTER = 20  # failures for one name from anywhere before every try at it is slowed
NAME_DELAY_S = 1.0  # ... by this long (the real user waits a second, and is never refused)
MAX_ENTRIES = 10_000  # remembered addresses and names; the oldest are dropped first
MAX_PASSWORD = 1024  # longer passwords are wrong without hashing them
CONCURRENT_CHECKS = 4  # scrypt checks at once (each holds a thread and ~16 MB for ~50 ms)
# Unknown names are checked against this, so a wrong name takes as long as a wrong password.
_DUMMY = access_users.hash_password(secrets.token_urlsafe(16))


class Throttle:
    """Recent sign-in failures per address, per (address, name) and per name; bounded."""

    def __init__(self, max_entries: int = MAX_ENTRIES, clock=time.monotonic) -> None:
        self.max_entries = max_entries
        self.clock = clock
        self._failures: OrderedDict[tuple, list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._failures)

    def _recent(self, key: tuple, now: float) -> list[float]:
        times = [t for t in self._failures.get(key, ()) if now - t < WINDOW_S]
        if times:
            self._failures[key] = times
        else:
            self._failures.pop(key, None)
        return times

    def _pause(self, key: tuple, free: int, now: float) -> float:
        times = self._recent(key, now)
        if len(times) < free:
            return 0.0
        pause = min(2.0 ** (len(times) - free), MAX_PAUSE_S)
        return max(times[-1] + pause - now, 0.0)

    def pause_s(self, address: str, name: str) -> float:
        """Seconds before `address` may try a password for `name` again (0: now)."""
        now = self.clock()
        with self._lock:
            return max(
                self._pause(("address", address), FREE_PER_ADDRESS, now),
                self._pause(("pair", address, name), FREE_PER_NAME, now),
            )

    def delay_s(self, name: str) -> float:
        """How long any try at `name` waits first, once it has drawn many failures."""
        with self._lock:
            many = len(self._recent(("name", name), self.clock())) >= NAME_SLOW_AFTER
        return NAME_DELAY_S if many else 0.0

    def attempt(self, address: str, name: str) -> None:
        """Count a try as failed before checking it, so tries sent all at once are counted
        before any of them is checked; `succeeded` takes it back."""
        self.failed(address, name)

    def failed(self, address: str, name: str) -> None:
        now = self.clock()
        with self._lock:
            for key in (("address", address), ("pair", address, name), ("name", name)):
                times = self._failures.pop(key, [])
                times = [t for t in times if now - t < WINDOW_S][-64:] + [now]
                self._failures[key] = times  # re-inserted: now the newest entry
            while len(self._failures) > self.max_entries:
                self._failures.popitem(last=False)

    def succeeded(self, address: str, name: str) -> None:
        with self._lock:
            self._failures.pop(("pair", address, name), None)
            for key in (("address", address), ("name", name)):
                if self._failures.get(key):
                    self._failures[key].pop()


throttle = Throttle()
_checks: asyncio.Semaphore | None = None


def _semaphore() -> asyncio.Semaphore:
    global _checks
    if _checks is None:
        _checks = asyncio.Semaphore(CONCURRENT_CHECKS)
    return _checks


def check_password(username: str, password: str) -> bool:
    """True when the password matches the IA3_USERS file's hash for the name (read each time,
    so a person added or removed counts at once); blocking, about 50 ms."""
    path = access_mode.active().users_file
    users = access_users.read_users(path) if path else {}
    name = (username or "").strip()
    matches = access_users.verify_password(password or "", users.get(name, _DUMMY))
    return matches and name in users


async def check_login(username: str, password: str) -> bool:
    """Gradio's auth callable (a coroutine, so Gradio awaits it instead of blocking its loop):
    True when the password matches; HTTP 429 naming the wait while this address is paused."""
    address = web_guard.client_address.get()
    name = (username or "").strip()[:100]
    wait = throttle.pause_s(address, name)
    if wait > 0:
        logger.warning("sign-in for %r from %s paused for %.0f s", name, address, wait)
        raise HTTPException(
            status_code=429,
            detail=f"Too many wrong passwords from your address; try again in {math.ceil(wait)} s.",
        )
    delay = throttle.delay_s(name)
    throttle.attempt(address, name)  # no await since the pause check: parallel tries count
    if delay:
        await asyncio.sleep(delay)
    password = password or ""
    ok = False
    if len(password) <= MAX_PASSWORD:
        async with _semaphore():
            ok = await anyio.to_thread.run_sync(check_password, name, password)
    if ok:
        throttle.succeeded(address, name)
    else:
        logger.info("failed sign-in for %r from %s", name, address)
    return ok
