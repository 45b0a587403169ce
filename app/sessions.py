"""Password sign-in sessions: Gradio's token -> user table, given an end.

A session ends after IA3_SESSION_HOURS, when its user leaves the password file or gets a new
password, and on sign-out; the table holds at most MAX_SESSIONS (the oldest go first).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path

from app import access_users
from ia3engine.errors import ConfigError

logger = logging.getLogger(__name__)

MAX_SESSIONS = 10_000
MAX_SESSIONS_PER_USER = 32  # one user signing in again and again drops only their own oldest


@dataclass(frozen=True)
class Session:
    name: str
    started: float  # time.time() at sign-in
    password_hash: str  # the file's hash then: a new password ends older sessions


class PasswordFile:
    """The IA3_USERS file, read again only when it changes on disk."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._seen: tuple | None = None
        self._users: dict[str, str] = {}
        self._lock = threading.Lock()

    def users(self) -> dict[str, str]:
        if self.path is None:
            return {}
        try:
            info = os.stat(self.path)
            seen = (info.st_mtime_ns, info.st_size, info.st_ino)
        except OSError:
            seen = None
        with self._lock:
            if seen != self._seen:
                try:
                    self._users = access_users.read_users(self.path) if seen else {}
                except ConfigError as error:  # a broken file signs everyone out, never in
                    logger.error("%s", error)
                    self._users = {}
                self._seen = seen
            return self._users


class Sessions(MutableMapping):
    """What Gradio keeps as `App.tokens` (token -> user name), where a session can end.

    Gradio asks `tokens.get(cookie)` on every request, so each look-up checks the session's
    age and its user's line in the password file.
    """

    def __init__(
        self, users_file: Path | None, hours: float, max_sessions: int = MAX_SESSIONS, clock=None
    ) -> None:
        self.file = PasswordFile(users_file)
        self.lifetime_s = hours * 3600
        self.max_sessions = max_sessions
        self.clock = clock or time.time
        self._live: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.RLock()

    def _valid(self, session: Session) -> bool:
        if self.clock() - session.started > self.lifetime_s:
            return False
        return self.file.users().get(session.name) == session.password_hash

    def __getitem__(self, token: str) -> str:
        with self._lock:
            session = self._live.get(token) if isinstance(token, str) else None
            if session is None:
                raise KeyError(token)
            if not self._valid(session):
                del self._live[token]
                logger.info(
                    "session of %s ended (expired, or removed from the users)", session.name
                )
                raise KeyError(token)
            return session.name

    def __setitem__(self, token: str, name: str) -> None:
        stored = self.file.users().get(name, "")
        with self._lock:
            own = [t for t, session in self._live.items() if session.name == name]
            for old in own[: max(len(own) - MAX_SESSIONS_PER_USER + 1, 0)]:
                del self._live[old]
            self._live[token] = Session(name, self.clock(), stored)
            self._live.move_to_end(token)
            while len(self._live) > self.max_sessions:
                self._live.popitem(last=False)

    def __delitem__(self, token: str) -> None:
        with self._lock:
            del self._live[token]

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            tokens = list(self._live)
        return iter([token for token in tokens if token in self])

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, token) -> bool:
        try:
            self[token]
        except KeyError:
            return False
        return True
