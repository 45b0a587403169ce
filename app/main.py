"""The studio: gr.Blocks built from one module per tab, mounted on FastAPI with the adapter pages.

`create_app(config)` returns the ASGI app; `serve(app, config, host, port)` runs it with uvicorn;
`run(args)` is `ia3 studio`: settings checked, embedded workers started, the app served.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
from pathlib import Path

import gradio as gr
import uvicorn
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from gradio.routes import App as GradioApp
from starlette.routing import Mount

from app import (
    access_mode,
    access_share,
    adapters_tab,
    api,
    api_keys_view,
    auth,
    fair_queue,
    http_api,
    inference,
    job_actions,
    jobs_tab,
    playground_tab,
    predict_view,
    sessions,
    share_page,
    studio_workers,
    train_tab,
    uploads,
    web_guard,
)
from app.model_pool import POOL
from app.studio_config import StudioConfig
from ia3engine.errors import ConfigError
from jobs.time_limit import job_seconds

logger = logging.getLogger(__name__)

CSS = (Path(__file__).parent / "style.css").read_text()
INTRO = (
    "# IA3 Studio\n"
    "Tune a model with (IA)³: pick a model and a dataset, press **Queue training**, follow it in "
    "**Jobs**, compare it with the untuned model in **Playground**, and download it from "
    "**Adapters** (it loads in PEFT)."
)


def _after_queue(job_id):
    """Open the Jobs tab on the job that was just queued."""
    if job_id is None:
        return gr.skip(), gr.skip()
    choices = jobs_tab.job_choices(job_actions.list_jobs(limit=100))
    return gr.Tabs(selected="jobs"), gr.Dropdown(choices=choices, value=int(job_id))


def _try_adapter(adapter_id):
    """Open the Playground with a finished job's adapter chosen."""
    if adapter_id is None:
        return gr.skip(), gr.skip()
    choices = playground_tab.adapter_choices()
    return gr.Tabs(selected="playground"), gr.Dropdown(choices=choices, value=[int(adapter_id)])


def build_studio(config: StudioConfig | None = None) -> gr.Blocks:
    """The whole page: five tabs, their cross-tab links and the API endpoints."""
    config = config or StudioConfig()
    private = {"api_visibility": "private"}
    # Gradio's cache (uploads, handed-out downloads) is swept hourly of files over 6 hours old,
    # so uploads of someone who never comes back do not stay until a restart.
    with gr.Blocks(title="IA3 Studio", delete_cache=(3600, 6 * 3600)) as demo:
        gr.Markdown(INTRO, elem_id="intro")
        auth.login_controls(demo)  # sign-in line when several people share the studio
        with gr.Tabs() as tabs:
            with gr.Tab("Train", id="train"):
                train = train_tab.build(demo, config)
            with gr.Tab("Jobs", id="jobs"):
                jobs = jobs_tab.build(demo, config)
            with gr.Tab("Playground", id="playground") as play_item:
                play = playground_tab.build(demo)
            with gr.Tab("Predict", id="predict") as predict_item:
                predict = predict_view.build(demo, config)
            with gr.Tab("Adapters", id="adapters") as adapters_item:
                adapters = adapters_tab.build(demo)
                access_share.build(adapters.selected)
                api_keys_view.build(demo, adapters_item.select)
        train.queue_event.then(_after_queue, train.queued_job, [tabs, jobs.selected], **private)
        predict.queue_event.then(_after_queue, predict.queued_job, [tabs, jobs.selected], **private)
        predict_item.select(predict.refresh, predict.adapter, predict.adapter, **private)
        jobs.try_button.click(_try_adapter, jobs.adapter_id, [tabs, play.adapters], **private)
        play_item.select(
            lambda: gr.Dropdown(choices=playground_tab.adapter_choices()),
            None,
            play.adapters,
            **private,
        )
        adapters.refresh_on(adapters_item.select)
        api.register(config.data_dir)
    return demo


def create_app(config: StudioConfig | None = None) -> FastAPI:
    """FastAPI app: /adapters/{id} pages and downloads, the HTTP API (/v1, with API keys) and
    the studio at /."""
    config = config or StudioConfig()
    config.data_dir.mkdir(parents=True, exist_ok=True)
    app = FastAPI(title="IA3 Studio")
    share_page.add_routes(app)  # before the mount, so these paths are not Gradio's
    http_api.add_routes(app, inference.SERVER, _key_policy())
    demo = build_studio(config)
    demo.queue(max_size=256, default_concurrency_limit=4)  # bounded; app.serving: per-person cap
    gr.mount_gradio_app(
        app,
        demo,
        path="/",
        **auth.mount_options(config.data_dir),  # sign-in, upload cap, what may be served
        ssr_mode=False,
        theme=gr.themes.Soft(primary_hue="indigo"),
        css=CSS,
        footer_links=["api", "settings"],
    )
    gradio_app = _mounted_gradio(app)
    _guard_sessions(gradio_app)
    _guard_cross_site(app, web_guard.active())
    uploads.guard(gradio_app)  # an uploaded or handed-out file belongs to one person
    # After the mount: a person's flood is refused when it joins the queue, not after it.
    multi_user = access_mode.active().multi_user
    fair_queue.guard(gradio_app, demo, fair_queue.events_limit(multi_user=multi_user))
    return app


def _key_policy() -> http_api.KeyPolicy:
    """API keys follow the studio's access mode: its admins and allowed users; keys the local
    user made only while the studio is local."""
    settings = access_mode.active()
    return http_api.KeyPolicy(
        admins=settings.admins, allowed=settings.allowed, local_keys=not settings.multi_user
    )


def _mounted_gradio(app: FastAPI) -> GradioApp:
    """The Gradio app that mount_gradio_app put in `app`, whose sessions and requests the
    guards below take over (a Gradio that mounts differently is refused, never left open)."""
    for route in app.routes:
        if isinstance(route, Mount) and isinstance(route.app, GradioApp):
            return route.app
    raise RuntimeError("the Gradio app is not mounted where IA3 Studio expects it")


def _guard_sessions(gradio_app: GradioApp) -> None:
    """Password sign-in: Gradio's session table becomes one whose sessions end (app.sessions)."""
    settings = access_mode.active()
    if settings.mode == "password":
        gradio_app.tokens = sessions.Sessions(settings.users_file, settings.session_hours)


def _guard_cross_site(app: FastAPI, web: web_guard.WebSettings) -> None:
    """Only the studio's own pages (and IA3_ALLOWED_ORIGINS) may use it from a browser.

    Gradio's own CORS middleware answers any origin with credentials allowed when the studio
    is reached by a name other than localhost; it stands aside when the parent app has a
    CORSMiddleware, which here lists the allowed origins only.
    """
    app.add_middleware(
        CORSMiddleware,
        allow_origins=sorted(web.allowed_origins),
        allow_credentials=True,
        allow_methods=["*"],
        allow_headers=["*"],
    )
    app.add_middleware(web_guard.CrossSiteGuard, settings=web)  # outermost: runs first


def serve(app: FastAPI, config: StudioConfig, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Run the studio `app` (from create_app) until interrupted."""
    print(f"IA3 Studio on http://{host}:{port}  (data in {config.data_dir})", flush=True)
    settings = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        # A request still running at a stop (a prediction) gets this long to finish.
        timeout_graceful_shutdown=3,
        forwarded_allow_ips=_trusted_proxies(),
    )
    _StudioServer(settings, _mounted_gradio(app)).run()


class _StudioServer(uvicorn.Server):
    """uvicorn that ends Gradio's heartbeat streams when it stops.

    Every open page (and every API client) holds a heartbeat stream that never ends by
    itself; Gradio closes them when its own server stops, through the mounted app's
    `stop_event`. Served by uvicorn here, nothing would set it, so each stop (docker stop, a
    Space restart) waited out the graceful timeout and logged a cancelled task per open page.
    """

    def __init__(self, settings: uvicorn.Config, gradio_app: GradioApp) -> None:
        super().__init__(settings)
        self._gradio_app = gradio_app

    async def shutdown(self, sockets=None) -> None:
        self._gradio_app.stop_event.set()  # on the server's own loop, where the streams wait
        await super().shutdown(sockets)


def _trusted_proxies() -> str | None:
    """Whose X-Forwarded-For/-Proto uvicorn believes (the client address that sign-in
    throttling counts): FORWARDED_ALLOW_IPS, else 127.0.0.1; on a Space everyone, since only
    Hugging Face's proxy reaches the container and without it all visitors would share one
    address (one guesser would pause everyone's sign-in)."""
    if os.environ.get("FORWARDED_ALLOW_IPS"):
        return None  # uvicorn reads it
    return "*" if os.environ.get("SYSTEM") == "spaces" else None


def _stop_on_sigterm(signum, frame) -> None:
    # uvicorn re-raises the SIGTERM it handled once it has shut down; the default action would
    # end the process on the spot, before the embedded workers are stopped.
    raise SystemExit(0)


def _settings_ok(host: str) -> bool:
    """Choose the access mode and the cross-site rules for `ia3 studio --host HOST`, and check
    IA3_MAX_JOB_MINUTES (read when a job is queued: a typo must stop the start, not every
    person's Train button) and IA3_SERVE_* (read by the first prediction); False (logged why)
    when refused."""
    try:
        access_mode.configure(auth.settings_from_env(host))
        web_guard.configure(web_guard.settings_from_env(host))
        job_seconds()
        POOL.settings  # noqa: B018  (reads and checks IA3_SERVE_* now)
    except ConfigError as error:
        logger.error("%s", error)
        return False
    return True


def run(args: argparse.Namespace) -> int:
    """`ia3 studio`: check the settings, start the workers, build the page and serve it."""
    if args.data_dir:
        # Set before any database use and before the workers start, so all of them share it.
        os.environ["IA3_DATA_DIR"] = str(Path(args.data_dir).resolve())
    if not _settings_ok(args.host):
        return 2  # e.g. listening beyond 127.0.0.1 needs an access mode; the log said which
    workers = 0 if args.no_worker else max(int(args.workers), 0)
    config = StudioConfig(model=args.model, sample=args.sample, workers=workers)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    pool = studio_workers.start_workers(workers, args.device) if workers else None
    if workers:
        print(f"Started {workers} worker process(es).", flush=True)
    else:
        print("No worker started: jobs wait until `ia3 worker` runs on this database.", flush=True)
    try:  # every setting the page reads (limits, origins, cookies) is checked here, once
        app = create_app(config)
    except ConfigError as error:
        logger.error("%s", error)
        studio_workers.stop_workers(pool)
        return 2
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        serve(app, config, host=args.host, port=args.port)
    finally:
        studio_workers.stop_workers(pool)
    return 0
