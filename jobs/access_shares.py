"""Share links: an adapter's page and downloads opened to anyone holding its secret token.

Opt-in per adapter by its owner (or an admin); the token is secrets.token_urlsafe(32), is
compared in constant time, and dies with the adapter or when sharing is turned off. The HTTP
API lends the adapter to a key's owner who presents the token (with_share): read-only.
"""

from __future__ import annotations

import logging
import re
import secrets
from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Integer, String, delete, insert, select
from sqlalchemy.orm import Mapped, mapped_column

from jobs import access
from jobs.access import Actor
from jobs.db import reading, writing
from jobs.errors import AccessDeniedError
from jobs.models import Base, utcnow

log = logging.getLogger(__name__)

TOKEN_BYTES = 32  # 256 random bits: guessing one is hopeless
_TOKEN = re.compile(r"[A-Za-z0-9_-]{20,100}")  # what token_urlsafe makes (43 characters)
NOT_SHARED = (
    "No adapter here. The link may be mistyped, or its owner stopped sharing the adapter; "
    "ask them for a new link."
)


class AdapterShare(Base):
    """Mirrors migration 0003: one secret link per shared adapter."""

    __tablename__ = "adapter_shares"

    adapter_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("adapters.id", ondelete="CASCADE"), primary_key=True
    )
    token: Mapped[str] = mapped_column(String(64), unique=True)
    adapter_sha256: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


def share_token(adapter_id: int, *, actor: Actor, db=None) -> str | None:
    """The adapter's current share token, or None when it is not shared."""
    access.get_adapter(adapter_id, actor=actor, db=db)
    with reading(db) as conn:
        return conn.scalar(
            select(AdapterShare.token).where(AdapterShare.adapter_id == int(adapter_id))
        )


def share_adapter(adapter_id: int, *, actor: Actor, db=None) -> str:
    """Turn sharing on (owner or admin only); returns the token, the same one if already on."""
    info = access.get_adapter(adapter_id, actor=actor, db=db)
    if actor.shared_adapter is not None and not access.may_see(actor, info.owner):
        raise AccessDeniedError(NOT_SHARED)
    with writing(db) as conn:
        token = conn.scalar(select(AdapterShare.token).where(AdapterShare.adapter_id == info.id))
        if token is None:
            token = secrets.token_urlsafe(TOKEN_BYTES)
            conn.execute(
                insert(AdapterShare).values(
                    adapter_id=info.id,
                    token=token,
                    adapter_sha256=info.sha256,
                    created_by=actor.name,
                    created_at=utcnow(),
                )
            )
            log.info("adapter %s shared by %s", info.id, actor.name or "the local user")
    return token


def unshare_adapter(adapter_id: int, *, actor: Actor, db=None) -> None:
    """Turn sharing off: the old link stops working at once."""
    info = access.get_adapter(adapter_id, actor=actor, db=db)
    if not access.may_see(actor, info.owner):
        raise AccessDeniedError(NOT_SHARED)
    with writing(db) as conn:
        conn.execute(delete(AdapterShare).where(AdapterShare.adapter_id == info.id))
    log.info("adapter %s no longer shared", info.id)


def open_share(adapter_id: int, token: str | None, *, db=None) -> Actor:
    """The read-only actor a valid link gives; the same refusal for every wrong link."""
    with reading(db) as conn:
        row = conn.execute(
            select(AdapterShare.token, AdapterShare.adapter_sha256).where(
                AdapterShare.adapter_id == int(adapter_id)
            )
        ).first()
    # compare_digest even when there is no row, so timing tells nothing either way.
    stored = row.token if row is not None else secrets.token_urlsafe(TOKEN_BYTES)
    if not secrets.compare_digest(stored.encode(), str(token or "").encode()) or row is None:
        raise AccessDeniedError(NOT_SHARED)
    actor = Actor(None, shared_adapter=int(adapter_id))
    try:
        info = access.get_adapter(adapter_id, actor=actor, db=db)
    except AccessDeniedError:
        raise AccessDeniedError(NOT_SHARED) from None
    if info.sha256 != row.adapter_sha256:  # the id now names another adapter
        raise AccessDeniedError(NOT_SHARED)
    return actor


def lent_adapter(token: str | None, *, db=None) -> int | None:
    """The adapter a live share token lends, or None for a malformed, unknown or revoked one
    (sharing turned off, the adapter deleted or replaced): open_share's checks, found by token."""
    token = str(token or "")
    if not _TOKEN.fullmatch(token):
        return None
    with reading(db) as conn:
        adapter_id = conn.scalar(select(AdapterShare.adapter_id).where(AdapterShare.token == token))
    try:
        open_share(adapter_id if adapter_id is not None else 0, token, db=db)
    except AccessDeniedError:
        return None
    return adapter_id


def with_share(actor: Actor, token: str | None, *, db=None) -> Actor:
    """`actor` with read-only use of the one adapter a share token lends, as its share page
    allows (see and use it; never change, share or unshare it). An admin sees all already;
    a token that lends nothing leaves the actor as it was."""
    if actor.admin or not actor.signed_in:
        return actor
    adapter_id = lent_adapter(token, db=db)
    if adapter_id is None:
        return actor
    return Actor(actor.name, admin=actor.admin, shared_adapter=adapter_id)
