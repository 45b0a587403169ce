"""`ia3 studio` and `ia3 serve`: their flags, and the hand-over to the studio (app.main.run)
or to the HTTP API alone (app.http_serve.run).

The studio starts embedded worker processes (app.studio_workers) on the same database, so
training never runs in the page's process; `--no-worker` gives a studio that only enqueues.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

FILES_PREFIX = "ia3-studio-files-"  # + the studio's process id: its own file folder (below)


def add_commands(subparsers) -> None:
    """Register `studio` on the `ia3` command's subparsers."""
    parser = subparsers.add_parser(
        "studio",
        help="start the web studio (train, follow jobs, try and download adapters)",
        description="Start IA3 Studio in the browser, with one embedded worker by default.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on")
    parser.add_argument(
        "--data-dir",
        help="where the database, uploads and logs live (default: $IA3_DATA_DIR or ./ia3-data)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, metavar="N", help="worker processes to start (default 1)"
    )
    parser.add_argument(
        "--no-worker", action="store_true", help="start no worker: the studio only enqueues jobs"
    )
    parser.add_argument("--device", help="device for the workers, e.g. cuda:0 (default: best)")
    parser.add_argument("--model", default="minilm", help="model preselected in the Train tab")
    parser.add_argument("--sample", default="sentiment", help="sample dataset preselected")
    parser.set_defaults(func=run_studio)
    add_serve_command(subparsers)


def add_serve_command(subparsers) -> None:
    """Register `serve`: the HTTP API alone (app.http_serve), for programs with an API key."""
    parser = subparsers.add_parser(
        "serve",
        help="serve the HTTP API for programs (classify, generate) with API keys",
        description="Serve /v1/classify, /v1/generate and /v1/adapters (docs at /docs) on the "
        "studio's database; programs send `Authorization: Bearer <key>` (keys: studio, "
        "Adapters tab).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument(
        "--data-dir",
        help="where the database and adapters live (default: $IA3_DATA_DIR or ./ia3-data)",
    )
    parser.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    """Serve the HTTP API (app.http_serve.run)."""
    from app import http_serve  # noqa: PLC0415 - loads torch and the database: see run_studio

    return http_serve.run(args)


def run_studio(args: argparse.Namespace) -> int:
    """Start the studio (app.main.run) with a file folder of its own."""
    with own_file_folder():
        # The studio's modules load gradio, torch and the database layer: seconds that
        # `ia3 --help` and every other command must not pay, so the studio is imported only
        # when it starts (and after GRADIO_TEMP_DIR is set: gradio reads it on import).
        from app import main as studio  # noqa: PLC0415

        return studio.run(args)


@contextmanager
def own_file_folder():
    """Give this studio process a folder of its own for the files people upload and download,
    removed when it stops, unless GRADIO_TEMP_DIR names one.

    Gradio's default is one folder per machine (<tmp>/gradio) where a file's path comes from
    its bytes, and a Gradio app that stops deletes every file it was sent. Two studios on one
    machine (two teams, or the old and the new process of a restart) would then share the
    path of the same upload, and the one that stops would delete the other's file. A studio
    cannot use an older process's files anyway: who uploaded what is kept in its memory.
    The folder's name holds the process id, so a studio that starts removes the folders of
    studios that were killed before they could remove theirs (the out-of-memory killer)."""
    if os.environ.get("GRADIO_TEMP_DIR"):
        yield
        return
    remove_orphaned_file_folders(Path(tempfile.gettempdir()))
    folder = tempfile.mkdtemp(prefix=f"{FILES_PREFIX}{os.getpid()}-")
    os.environ["GRADIO_TEMP_DIR"] = folder
    try:
        yield
    finally:
        os.environ.pop("GRADIO_TEMP_DIR", None)
        shutil.rmtree(folder, ignore_errors=True)


def remove_orphaned_file_folders(root: Path) -> None:
    """Remove the studio file folders under `root` whose process has ended."""
    for folder in root.glob(f"{FILES_PREFIX}*"):
        pid = folder.name.removeprefix(FILES_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    """Whether process `pid` runs (another user's counts: it is not ours to clean up)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def main(argv: list[str] | None = None) -> int:
    """`python -m app.studio_cli` = `ia3 studio`, without the other commands' imports."""
    parser = argparse.ArgumentParser(prog="ia3")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["studio", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
