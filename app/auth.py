"""Who is using the studio: the access mode chosen from the environment at start, and the
signed-in user per request.

Modes: local (127.0.0.1 only, one person, no sign-in), password (an IA3_USERS file), oauth
(Hugging Face sign-in on a Space). Handlers call current_actor() and pass it to jobs.access.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path

import gradio as gr
from gradio.context import LocalContext

from app import access_users, sign_in, web_guard
from app.access_mode import MODES, AccessSettings, active
from ia3engine.errors import ConfigError
from jobs import access_shares
from jobs.access import ANONYMOUS, LOCAL, SIGN_IN, Actor, user
from jobs.access_limits import BUNDLED_MODELS, Limits, check_model
from jobs.errors import AccessDeniedError

logger = logging.getLogger(__name__)

OAUTH_VARIABLES = ("OAUTH_CLIENT_ID", "OAUTH_CLIENT_SECRET", "OAUTH_SCOPES", "OPENID_PROVIDER_URL")
OAUTH_PACKAGES = ("authlib", "itsdangerous")  # gradio's OAuth routes need both

REFUSAL = """IA3 Studio will not listen on {host} without sign-in: anyone who reaches it could see,
download and delete every job and adapter. Choose one:
  - On a Hugging Face Space: add `hf_oauth: true` to the README front matter; people sign in
    with their Hugging Face account (IA3_ADMINS=name1,name2 names the admins).
  - Anywhere else: make a password file and point IA3_USERS at it:
        ia3 users add NAME --file /data/users.txt
        IA3_USERS=/data/users.txt ia3 studio --host {host}
  - Or keep the default --host 127.0.0.1 and reach it through an SSH tunnel."""


def _names(raw: str | None) -> frozenset[str]:
    return frozenset(n.strip() for n in (raw or "").replace(";", ",").split(",") if n.strip())


def _session_hours(raw: str | None) -> float:
    try:
        hours = float(raw) if raw and raw.strip() else 12.0
    except ValueError:
        hours = -1.0
    if not 0 < hours <= 24 * 366:
        raise ConfigError(
            f"IA3_SESSION_HOURS={raw!r} is not a number of hours; set it like "
            "IA3_SESSION_HOURS=12 (a sign-in lasts that long)."
        )
    return hours


def settings_from_env(host: str, env: Mapping[str, str] | None = None) -> AccessSettings:
    """The access mode for listening on `host`, or ConfigError saying how to choose one.

    IA3_ACCESS picks a mode outright; otherwise IA3_USERS means password, a Space with
    OAuth variables means oauth, and anything else is local (127.0.0.1 only).
    """
    env = os.environ if env is None else env
    users = (env.get("IA3_USERS") or "").strip()
    on_space = env.get("SYSTEM") == "spaces" and bool(env.get("OAUTH_CLIENT_ID"))
    mode = (env.get("IA3_ACCESS") or "").strip().lower()
    mode = mode or ("password" if users else "oauth" if on_space else "local")
    if mode not in MODES:
        raise ConfigError(f"IA3_ACCESS={mode!r} is not a mode; use one of {', '.join(MODES)}.")
    if mode == "local" and not web_guard.is_loopback(host):
        raise ConfigError(REFUSAL.format(host=host))
    settings = AccessSettings(
        mode=mode,
        users_file=Path(users).expanduser() if users else None,
        admins=_names(env.get("IA3_ADMINS")),
        allowed=_names(env.get("IA3_ALLOWED_USERS")) or None,
        limits=Limits.from_env(env, defaults=mode != "local"),
        session_hours=_session_hours(env.get("IA3_SESSION_HOURS")),
    )
    if mode == "password":
        _check_password_mode(settings)
    if mode == "oauth":
        _check_oauth_mode(env)
    return settings


def _check_password_mode(settings: AccessSettings) -> None:
    if settings.users_file is None:
        raise ConfigError(
            "IA3_ACCESS=password needs IA3_USERS, a password file: create it with "
            "`ia3 users add NAME --file users.txt` and set IA3_USERS=users.txt."
        )
    if not access_users.read_users(settings.users_file):
        raise ConfigError(
            f"IA3_USERS={settings.users_file} holds no users (or does not exist); add one with "
            f"`ia3 users add NAME --file {settings.users_file}`."
        )


def _check_oauth_mode(env: Mapping[str, str]) -> None:
    missing = [name for name in ("SPACE_ID", *OAUTH_VARIABLES) if not env.get(name)]
    if env.get("SYSTEM") != "spaces":  # gradio's real OAuth routes exist only on a Space
        missing.insert(0, "SYSTEM=spaces")
    if missing:
        raise ConfigError(
            f"Hugging Face sign-in needs a Space with `hf_oauth: true` in its README front "
            f"matter (missing: {', '.join(missing)}). Elsewhere use a password file (IA3_USERS)."
        )
    if any(importlib.util.find_spec(package) is None for package in OAUTH_PACKAGES):
        raise ConfigError(
            "Hugging Face sign-in needs authlib and itsdangerous: pip install authlib itsdangerous"
        )


# The user of the current request ---------------------------------------------------------------

_forced: ContextVar[Actor | None] = ContextVar("ia3_forced_actor", default=None)


@contextlib.contextmanager
def acting_as(actor: Actor) -> Iterator[Actor]:
    """Run the block for `actor` (a share link's visitor, a test) whatever the request says."""
    token = _forced.set(actor)
    try:
        yield actor
    finally:
        _forced.reset(token)


def current_actor() -> Actor:
    """The person the running handler acts for: from the Gradio request of this event."""
    forced = _forced.get()
    if forced is not None:
        return forced
    settings = active()
    if not settings.multi_user:
        return LOCAL
    name = signed_in_name(_gradio_request(), settings)
    if not name:
        return ANONYMOUS
    if settings.allowed is not None and name not in settings.allowed | settings.admins:
        logger.warning("user %s signed in but is not in IA3_ALLOWED_USERS", name)
        return ANONYMOUS
    return user(name, admins=settings.admins)


def _gradio_request():
    # Gradio sets this for the duration of each event handler and API call it runs.
    return LocalContext.request.get(None)


def signed_in_name(request, settings: AccessSettings | None = None) -> str | None:
    """The user name a gr.Request carries: password sign-in, or the Space's OAuth session."""
    if request is None:
        return None
    settings = settings or active()
    if settings.mode == "password":
        return getattr(request, "username", None) or None
    if settings.mode != "oauth":
        return None
    underlying = getattr(request, "request", None) or request
    scope = getattr(underlying, "scope", None)
    session = scope.get("session") if isinstance(scope, dict) else None
    info = (session or {}).get("oauth_info") or {}
    expires = info.get("expires_at")
    # Hugging Face's tokens always expire: a session without an end is not one it made.
    if not isinstance(expires, int | float) or expires < time.time():
        return None
    return (info.get("userinfo") or {}).get("preferred_username") or None


# What the app needs from the mode -------------------------------------------------------------


def mount_options(data_dir: Path) -> dict:
    """Keyword arguments for gr.mount_gradio_app: sign-in, upload cap and served folders.

    With several users the data directory is never served directly (it holds the database and
    everyone's files); downloads are copied out per request instead (app.access_files).
    """
    settings = active()
    limit_mb = settings.limits.max_upload_mb
    options: dict = {"max_file_size": int(limit_mb * 2**20) if limit_mb else None}
    if not settings.multi_user:
        options["allowed_paths"] = [str(data_dir)]
        return options
    options["allowed_paths"] = []
    options["blocked_paths"] = [str(Path(data_dir).resolve())]
    if settings.mode == "password":
        options["auth"] = sign_in.check_login  # a coroutine: Gradio awaits it off its loop
        options["auth_message"] = "Sign in to IA3 Studio with the name and password you were given."
    return options


def login_controls(demo) -> None:
    """The sign-in line at the top of the page (call inside `demo`, the Blocks)."""
    settings = active()
    if settings.mode == "oauth":
        gr.LoginButton(elem_id="login")
    if not settings.multi_user:
        return
    who = gr.Markdown(elem_id="signed-in-as")

    def show():
        actor = current_actor()
        if not actor.signed_in:
            return "Sign in with the button above to train and see your adapters."
        role = " (admin: you see everyone's work)" if actor.admin else ""
        logout = " · [Sign out](/logout)" if settings.mode == "password" else ""
        return f"Signed in as **{actor.name}**{role}{logout}"

    demo.load(show, None, who, api_visibility="private")


@contextlib.contextmanager
def share_visit(adapter_id: int, token: str | None) -> Iterator[Actor]:
    """Serve one request to an adapter's page: as the link's guest when a token is given,
    else as whoever is using the studio (the local user; nobody, when several share it).

    Any refusal inside reads the same, so a page answers 404 alike for missing adapters,
    other people's adapters and wrong tokens.
    """
    try:
        actor = access_shares.open_share(adapter_id, token) if token else current_actor()
        with acting_as(actor):
            yield actor
    except AccessDeniedError:
        raise AccessDeniedError(access_shares.NOT_SHARED) from None


def check_model_choice(model: str) -> None:
    """Signed-in users may load Hub ids and bundled models only, never a folder on the server;
    a visitor who has not signed in may look at the bundled model only (loading others costs
    the studio memory)."""
    actor = current_actor()
    if actor == LOCAL:
        return
    check_model(model)
    if not actor.signed_in and str(model).strip() not in BUNDLED_MODELS:
        raise AccessDeniedError(SIGN_IN)
