"""The access mode of this studio process (local, password or oauth), its admins and limits.

Chosen once at start (app.auth reads it from the environment) and read by every request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from jobs.access_limits import NO_LIMITS, Limits

logger = logging.getLogger(__name__)

MODES = ("local", "password", "oauth")


@dataclass(frozen=True)
class AccessSettings:
    """The access mode and who counts as an admin; fixed when the studio starts."""

    mode: str = "local"
    users_file: Path | None = None  # password mode: the IA3_USERS file
    admins: frozenset[str] = frozenset()  # IA3_ADMINS: see and change everything
    allowed: frozenset[str] | None = None  # IA3_ALLOWED_USERS (oauth): only these may act
    limits: Limits = NO_LIMITS  # the local user: only limits set in the environment
    session_hours: float = 12.0  # IA3_SESSION_HOURS: a password sign-in lasts this long

    @property
    def multi_user(self) -> bool:
        return self.mode != "local"


_settings = AccessSettings()


def configure(settings: AccessSettings) -> AccessSettings:
    """Fix the access mode for this process (the studio calls it once, before building)."""
    global _settings
    _settings = settings
    logger.info("access mode: %s", settings.mode)
    return settings


def active() -> AccessSettings:
    """The access mode this process runs in (local until configure is called)."""
    return _settings
