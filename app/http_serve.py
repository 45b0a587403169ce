"""`ia3 serve`: the HTTP API alone (no studio page), with its OpenAPI page at /docs.

Several `ia3 serve` processes may share one database (IA3_DATABASE_URL): keys and adapters
live there, so a key made through one works on all, and an adapter registered later is served
by each. Who counts as an admin and who may use the API come from the same environment as the
studio's (IA3_ADMINS, IA3_ALLOWED_USERS); keys the local user made work only where the studio
would be local (no IA3_USERS or IA3_ACCESS, not a Space).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from app import auth, http_api, inference
from ia3engine.errors import ConfigError

logger = logging.getLogger(__name__)


def policy_from_env() -> http_api.KeyPolicy:
    """Admins, allowed users and whether local keys count, as the studio would read them."""
    settings = auth.settings_from_env("127.0.0.1")  # keys, not sign-in, guard the API
    return http_api.KeyPolicy(
        admins=settings.admins, allowed=settings.allowed, local_keys=not settings.multi_user
    )


def create_api(server=None, policy: http_api.KeyPolicy | None = None) -> FastAPI:
    """The API app: /v1 routes, /docs and /openapi.json, nothing else."""
    app = FastAPI(
        title="IA3 API",
        description="Classify and generate with your (IA)³ adapters. Authorization: Bearer <key>.",
        redoc_url=None,
    )
    http_api.add_routes(app, inference.SERVER if server is None else server, policy)
    return app


def _stop_on_sigterm(signum, frame) -> None:
    raise SystemExit(0)


def run(args: argparse.Namespace) -> int:
    """`ia3 serve --host --port`: serve the API until stopped."""
    if args.data_dir:
        os.environ["IA3_DATA_DIR"] = str(Path(args.data_dir).resolve())
    try:
        inference.SERVER.pool.settings  # noqa: B018  (reads and checks IA3_SERVE_* now)
        app = create_api(policy=policy_from_env())
    except ConfigError as error:
        logger.error("%s", error)
        return 2
    print(f"IA3 API on http://{args.host}:{args.port}  (docs at /docs)", flush=True)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    uvicorn.run(
        app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=3
    )
    return 0
