"""Browser fixtures: a real studio (with a real worker process) and Debian's Chromium.

The studio runs as `ia3 studio` in a subprocess on a free port with its own data directory;
Chromium runs headless through Playwright with every non-local request blocked. Each test
saves screenshots of its steps under test-output/<test name>/.
"""

import csv
import os
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright
from studio_page import NEWCOMER
from studio_support import running_studio

from app import access_users

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "test-output"
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOCAL = ("http://127.0.0.1", "http://localhost", "data:", "blob:")
# A shared 2-core machine can take many seconds to answer; wait for the page, not a clock.
expect.set_options(timeout=60_000)


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/browser/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def studio(tmp_path_factory):
    """`ia3 studio` with one embedded worker, on a free port and a fresh data directory."""
    with running_studio(tmp_path_factory.mktemp("studio-data")) as running:
        yield running


@pytest.fixture(scope="module")
def signed_in_studio(tmp_path_factory):
    """`ia3 studio` with password sign-in: one account (NEWCOMER) that has done nothing yet."""
    data = tmp_path_factory.mktemp("signed-in-studio")
    users = data / "users.txt"
    access_users.add_user(users, *NEWCOMER)
    with running_studio(data, env={"IA3_USERS": str(users)}) as running:
        yield running


@pytest.fixture
def reviews_csv(tmp_path):
    """The sample sentiment rows under other column names, with an id column to ignore."""
    with open(ROOT / "examples/data/sentiment_train.csv", newline="") as source:
        rows = list(csv.DictReader(source))
    path = tmp_path / "my_reviews.csv"
    with open(path, "w", newline="") as target:
        writer = csv.writer(target)
        writer.writerow(["id", "comment", "verdict"])
        writer.writerows([i, row["text"], row["label"]] for i, row in enumerate(rows))
    return path


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail(
            "Debian's chromium is not installed (apt-get install chromium, or run `make test`, which installs it)"
        )
    return path


@pytest.fixture
def browser(chromium_path, tmp_path):
    """A fresh Chromium profile that may only talk to this machine."""

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=chromium_path,
            headless=True,
            args=CHROMIUM_FLAGS,
            accept_downloads=True,
            viewport={"width": 1366, "height": 900},
        )
        context.route(
            "**/*",
            lambda route: (
                route.continue_() if route.request.url.startswith(LOCAL) else route.abort()
            ),
        )
        context.set_default_timeout(30_000)
        try:
            yield context
        finally:
            context.close()


class Shots:
    """Numbered full-page screenshots of a test's steps."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.count = 0
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)

    def __call__(self, page, step: str) -> Path:
        """Save the whole page. The window grows to the page's height first, and the plots get
        a moment to redraw, because a resize during a full-page capture leaves them blank."""
        self.count += 1
        path = self.folder / f"{self.count:02d}-{step}.png"
        size = page.viewport_size
        height = page.evaluate("document.documentElement.scrollHeight")
        if height > size["height"]:
            page.set_viewport_size({"width": size["width"], "height": height})
            page.wait_for_timeout(1000)
        page.screenshot(path=str(path))
        page.set_viewport_size(size)
        return path


@pytest.fixture
def shots(request) -> Shots:
    return Shots(OUTPUT / request.node.name)
