"""API keys: a program calls the HTTP API as the person who made the key.

A key reads `ia3_<prefix>_<secret>`: the prefix (8 hex characters, public, shown in the
studio) finds the row; the secret is secrets.token_urlsafe(32). Only the SHA-256 of the whole
key is stored and it is compared in constant time: 256 random bits need no slow hash, and the
database never holds a key. The key is shown once, when it is made. Each person lists and
revokes only their own keys (another's key gets the same refusal as a missing one), and has
at most MAX_LIVE_KEYS live keys at a time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import DateTime, Integer, String, func, insert, select, text, update
from sqlalchemy.orm import Mapped, mapped_column

from jobs import access
from jobs.access import LOCAL, Actor
from jobs.db import reading, retried, writing
from jobs.errors import AccessDeniedError, LimitError
from jobs.models import Base, as_utc, utcnow

log = logging.getLogger(__name__)

SECRET_BYTES = 32  # 256 random bits
PREFIX_BYTES = 4  # 8 hex characters: enough to tell one's keys apart, too short to matter
MAX_NAME = 100
MAX_KEY_CHARS = 200  # longer than any key we make; a longer header is refused unread
_CREATE_LOCK_KEY = 4_193_007  # serialises key creation on PostgreSQL (the bound's count)
LAST_USED_EVERY = timedelta(minutes=1)  # last_used_at is written at most this often
_KEY = re.compile(r"^ia3_([0-9a-f]{8})_([A-Za-z0-9_-]{20,})$")
_WHICH = "The API keys section (Adapters tab) lists your keys"


def max_live_keys() -> int:
    """IA3_MAX_API_KEYS (default 20): live (not revoked) keys one person may hold."""
    raw = os.environ.get("IA3_MAX_API_KEYS", "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else 20


class ApiKey(Base):
    """Mirrors migration 0007."""

    __tablename__ = "api_keys"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(200), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class KeyInfo:
    """What a person sees of one of their keys (never the key itself)."""

    id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def live(self) -> bool:
        return self.revoked_at is None


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _clean_name(name: str) -> str:
    cleaned = " ".join(str(name or "").split())
    if not cleaned:
        raise LimitError("Give the key a name (e.g. the program that will use it).")
    if len(cleaned) > MAX_NAME:
        raise LimitError(f"A key's name may have at most {MAX_NAME} characters; shorten it.")
    return cleaned


def _owner_clause(owner: str | None):
    return ApiKey.owner.is_(None) if owner is None else ApiKey.owner == owner


@retried
def create_key(name: str, *, actor: Actor, db=None) -> tuple[KeyInfo, str]:
    """Make a key for `actor`; returns (its info, the key). The key is never shown again."""
    owner = access.owner_for(actor)  # refuses anyone not signed in
    name = _clean_name(name)
    limit = max_live_keys()
    with writing(db) as conn:
        if conn.dialect.name == "postgresql":  # SQLite's write transactions are serial already
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _CREATE_LOCK_KEY})
        live = conn.scalar(
            select(func.count())
            .select_from(ApiKey)
            .where(_owner_clause(owner), ApiKey.revoked_at.is_(None))
        )
        if live >= limit:
            raise LimitError(
                f"You have {live} live API keys, the most allowed ({limit}); revoke one you "
                "no longer use, then make the new one."
            )
        while True:  # a clash of 8 hex characters is rare; pick again if it happens
            prefix = secrets.token_hex(PREFIX_BYTES)
            taken = conn.scalar(select(ApiKey.id).where(ApiKey.prefix == prefix))
            if taken is None:
                break
        key = f"ia3_{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"
        now = utcnow()
        key_id = conn.execute(
            insert(ApiKey)
            .values(
                owner=owner, name=name, prefix=prefix, secret_sha256=_digest(key), created_at=now
            )
            .returning(ApiKey.id)
        ).scalar_one()
    log.info("API key %s (%s) made by %s", prefix, name, owner or "the local user")
    return KeyInfo(key_id, name, prefix, now, None, None), key


def _info(row) -> KeyInfo:
    return KeyInfo(
        row.id,
        row.name,
        row.prefix,
        as_utc(row.created_at),
        as_utc(row.last_used_at),
        as_utc(row.revoked_at),
    )


def list_keys(*, actor: Actor, db=None) -> list[KeyInfo]:
    """The actor's own keys, newest first (revoked ones too, marked so)."""
    owner = access.owner_for(actor)
    with reading(db) as conn:
        rows = conn.execute(
            select(ApiKey).where(_owner_clause(owner)).order_by(ApiKey.id.desc())
        ).all()
    return [_info(row) for row in rows]


@retried
def revoke_key(key_id: int, *, actor: Actor, db=None) -> KeyInfo:
    """Revoke one of the actor's keys: it stops working at once. Revoking twice is harmless."""
    owner = access.owner_for(actor)
    refusal = AccessDeniedError(f"No API key #{key_id} among yours. {_WHICH}.")
    try:
        key_id = int(key_id)
    except (TypeError, ValueError):
        raise refusal from None
    with writing(db) as conn:
        row = conn.execute(select(ApiKey).where(ApiKey.id == key_id, _owner_clause(owner))).first()
        if row is None:
            raise refusal
        if row.revoked_at is None:
            conn.execute(update(ApiKey).where(ApiKey.id == key_id).values(revoked_at=utcnow()))
    log.info("API key %s revoked by %s", row.prefix, owner or "the local user")
    return next(k for k in list_keys(actor=actor, db=db) if k.id == key_id)


def resolve(key: str | None, *, admins=(), db=None) -> Actor | None:
    """The person a key acts for, or None for a missing, malformed, unknown or revoked key.

    The key's owner acts as a signed-in user (an admin if named in `admins`); a key the local
    user made acts as the local user.
    """
    key = str(key or "")
    match = _KEY.match(key) if len(key) <= MAX_KEY_CHARS else None
    prefix = match.group(1) if match else "-"
    with reading(db) as conn:
        row = conn.execute(
            select(
                ApiKey.id,
                ApiKey.owner,
                ApiKey.secret_sha256,
                ApiKey.revoked_at,
                ApiKey.last_used_at,
            ).where(ApiKey.prefix == prefix)
        ).first()
    # compare_digest even without a row, so timing says nothing about which prefixes exist.
    stored = row.secret_sha256 if row is not None else _digest(secrets.token_hex(16))
    same = secrets.compare_digest(stored.encode(), _digest(key).encode())
    if not (match and row is not None and same) or row.revoked_at is not None:
        return None
    _mark_used(row.id, as_utc(row.last_used_at), db)
    if row.owner is None:
        return LOCAL
    return access.user(row.owner, admins=admins)


def _mark_used(key_id: int, last: datetime | None, db) -> None:
    now = utcnow()
    if last is not None and now - last < LAST_USED_EVERY:
        return  # one write a minute per key at most, not one per request
    try:
        with writing(db) as conn:
            conn.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now))
    except Exception:  # a busy database must not refuse the call; the time is a courtesy
        log.warning("could not record the use of API key #%s", key_id, exc_info=True)
