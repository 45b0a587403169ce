"""Cross-site rules for every request the studio serves: which origins a browser may act from,
and the flags of the sign-in cookies. One ASGI middleware around the whole app applies them.

A browser sends `Origin` (and `Sec-Fetch-Site`, `Referer`) on its own; scripts and
gradio_client send none, and they carry no victim's cookies, so only browser requests that
say they come from another site are refused.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from urllib.parse import urlsplit

from ia3engine.errors import ConfigError

logger = logging.getLogger(__name__)

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# GET routes that change state (sign-out) are checked like a POST.
STATE_CHANGING_GETS = ("/logout", "/logout/")
SESSION_COOKIES = ("access-token", "session")  # Gradio's password sign-in, the Space's OAuth
SAME_SITE = ("lax", "strict", "none")
REFUSED_CROSS_SITE = (
    b"IA3 Studio refuses requests sent from another web site. Open the studio's own page, or "
    b"ask its operator to add that site to IA3_ALLOWED_ORIGINS."
)
REFUSED_HOST = (
    b"This studio listens on the loopback address: open it at http://127.0.0.1 or "
    b"http://localhost on its port. Behind a proxy that passes another name, its operator "
    b"lists that site in IA3_ALLOWED_ORIGINS."
)

# The client address of the request being served (after a trusted proxy's X-Forwarded-For, as
# uvicorn resolves it with FORWARDED_ALLOW_IPS); sign-in throttling reads it.
client_address: ContextVar[str] = ContextVar("ia3_client_address", default="unknown")


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class WebSettings:
    """Where the studio listens and what browsers may do from elsewhere; fixed at start."""

    listen_host: str = "127.0.0.1"  # `ia3 studio --host`
    allowed_origins: frozenset[str] = frozenset()  # IA3_ALLOWED_ORIGINS, as scheme://host[:port]
    secure_cookies: str = "auto"  # IA3_SECURE_COOKIES: auto (when served over https) | always
    same_site: str = "lax"  # IA3_COOKIE_SAMESITE: lax | strict | none (a Space's embed)
    frame_ancestors: tuple[str, ...] = ()  # who may show the studio in a frame, besides itself


def _origin(url: str) -> str | None:
    """`scheme://host[:port]` of a URL with the default port left out, or None if it has none."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    default = 443 if parts.scheme == "https" else 80
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def settings_from_env(host: str, env: Mapping[str, str] | None = None) -> WebSettings:
    """The cross-site settings for listening on `host`; ConfigError names a bad variable."""
    env = os.environ if env is None else env
    origins = set()
    for raw in (env.get("IA3_ALLOWED_ORIGINS") or "").replace(";", ",").split(","):
        if not raw.strip():
            continue
        origin = _origin(raw)
        if origin is None or urlsplit(raw.strip()).path not in ("", "/"):
            raise ConfigError(
                f"IA3_ALLOWED_ORIGINS holds {raw.strip()!r}, which is not an origin; list sites "
                "as scheme://host[:port], e.g. IA3_ALLOWED_ORIGINS=https://tools.example.org"
            )
        origins.add(origin)
    on_space = env.get("SYSTEM") == "spaces"
    secure = (env.get("IA3_SECURE_COOKIES") or "auto").strip().lower()
    if secure not in ("auto", "always"):
        raise ConfigError(
            f"IA3_SECURE_COOKIES={secure!r} is not a choice; use auto (Secure cookies when the "
            "studio is reached over https) or always."
        )
    # A Space is shown inside huggingface.co's page: its cookies are third-party there and
    # need SameSite=None; the origin checks below still refuse other sites' requests.
    same_site = (env.get("IA3_COOKIE_SAMESITE") or ("none" if on_space else "lax")).strip().lower()
    if same_site not in SAME_SITE:
        raise ConfigError(
            f"IA3_COOKIE_SAMESITE={same_site!r} is not a choice; use lax, strict or none."
        )
    frames = ("https://huggingface.co",) if on_space else ()
    return WebSettings(
        listen_host=host,
        allowed_origins=frozenset(origins),
        secure_cookies="always" if on_space else secure,
        same_site=same_site,
        frame_ancestors=frames + tuple(sorted(origins)),
    )


_settings = WebSettings()


def configure(settings: WebSettings) -> WebSettings:
    """Fix the cross-site settings for this process (before create_app)."""
    global _settings
    _settings = settings
    return settings


def active() -> WebSettings:
    return _settings


# Judging one request ------------------------------------------------------------------------


def _host_and_port(host_header: str) -> tuple[str, int | None]:
    try:
        parts = urlsplit("//" + host_header.strip())
        return (parts.hostname or "").lower(), parts.port
    except ValueError:
        return "", None


def same_origin(origin: str, host_header: str) -> bool:
    """Whether `origin` names the studio as the request reached it (its Host header).

    The scheme is not compared: behind an https proxy the studio itself is reached over http.
    A Host without a port matches only an origin on its scheme's default port.
    """
    normal = _origin(origin)
    if normal is None:
        return False
    parts = urlsplit(normal)
    host, port = _host_and_port(host_header)
    return parts.hostname == host and parts.port == port


def is_allowed_origin(origin: str, headers: Mapping[str, str], settings: WebSettings) -> bool:
    """The studio's own origin (its Host, or the X-Forwarded-Host a proxy names it by), or one
    in IA3_ALLOWED_ORIGINS.

    Another site's page cannot add X-Forwarded-Host to a request without a CORS preflight,
    and preflights from other origins are refused.
    """
    if _origin(origin) in settings.allowed_origins:
        return True
    forwarded = headers.get("x-forwarded-host", "").split(",")[0]
    return same_origin(origin, headers.get("host", "")) or (
        bool(forwarded.strip()) and same_origin(origin, forwarded)
    )


def cross_site_reason(method: str, path: str, headers: Mapping[str, str], settings) -> str | None:
    """Why a request is refused as coming from another site, or None to serve it."""
    origin = headers.get("origin")
    if origin is not None:  # sent on every cross-origin fetch and on every POST
        return None if is_allowed_origin(origin, headers, settings) else f"origin {origin!r}"
    if method in SAFE_METHODS and path not in STATE_CHANGING_GETS:
        return None  # reading is harmless without CORS headers: the other site cannot see it
    fetch_site = headers.get("sec-fetch-site")
    referer = headers.get("referer")
    if referer and _origin(referer):
        return None if is_allowed_origin(referer, headers, settings) else "referer"
    if fetch_site in ("cross-site", "same-site"):
        return f"Sec-Fetch-Site {fetch_site}"
    return None  # no browser headers: a script, which holds no one else's cookies


def host_refusal(headers: Mapping[str, str], settings: WebSettings) -> bool:
    """A studio on the loopback address answers only to loopback names: a web page whose name
    resolves to 127.0.0.1 (DNS rebinding) is not the studio's own origin."""
    if not is_loopback(settings.listen_host):
        return False
    name, _ = _host_and_port(headers.get("host", ""))
    if not name:
        return False  # no Host: not a browser (every browser request names its host)
    allowed = {urlsplit(origin).hostname for origin in settings.allowed_origins}
    return not (is_loopback(name) or name in allowed)


def secure_cookie_header(value: str, *, secure: bool, same_site: str) -> str:
    """A Set-Cookie value with HttpOnly, our SameSite and (when `secure`) Secure."""
    name = value.split("=", 1)[0].strip()
    if not name.startswith(SESSION_COOKIES):
        return value
    kept = [
        part.strip()
        for part in value.split(";")
        if part.strip().split("=", 1)[0].lower() not in ("samesite", "secure", "httponly")
    ]
    kept += ["HttpOnly", f"SameSite={same_site.capitalize()}"]
    if secure or same_site == "none":  # browsers drop SameSite=None cookies without Secure
        kept.append("Secure")
    return "; ".join(kept)


# The middleware -----------------------------------------------------------------------------


async def _refuse(send, body: bytes, status: int = 403) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"vary", b"Origin")],
        }
    )
    await send({"type": "http.response.body", "body": body})


class CrossSiteGuard:
    """ASGI middleware: refuses other sites' browser requests, hardens the session cookies and
    adds the frame and sniffing headers; remembers the client address for sign-in."""

    def __init__(self, app, settings: WebSettings | None = None) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        settings = self.settings or active()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        client = scope.get("client")
        client_address.set(client[0] if client else "unknown")
        method = scope.get("method", "GET") if scope["type"] == "http" else "POST"
        reason = (
            "host " + repr(headers.get("host"))
            if host_refusal(headers, settings)
            else cross_site_reason(method, scope.get("path", ""), headers, settings)
        )
        if reason is not None:
            logger.warning(
                "refused %s %s from another site (%s)", method, scope.get("path"), reason
            )
            if scope["type"] == "websocket":
                await receive()  # the connect message, then a policy-violation close
                await send({"type": "websocket.close", "code": 1008})
                return
            body = REFUSED_HOST if reason.startswith("host") else REFUSED_CROSS_SITE
            await _refuse(send, body)
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        secure = settings.secure_cookies == "always" or scope.get("scheme") == "https"
        frames = " ".join(("'self'", *settings.frame_ancestors))

        async def send_hardened(message) -> None:
            if message["type"] == "http.response.start":
                out = []
                for key, value in message.get("headers", []):
                    if key.lower() == b"set-cookie":
                        value = secure_cookie_header(
                            value.decode("latin-1"), secure=secure, same_site=settings.same_site
                        ).encode("latin-1")
                    out.append((key, value))
                names = {key.lower() for key, _ in out}
                if b"content-security-policy" not in names:
                    out.append((b"content-security-policy", f"frame-ancestors {frames}".encode()))
                if b"x-content-type-options" not in names:
                    out.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": out}
            await send(message)

        await self.app(scope, receive, send_hardened)
