"""Validation insights in a real browser: a finished job's confusion matrices (before and
after tuning), per-class table and wrong rows in the Jobs tab, and the same on the adapter's
view in the Adapters tab. The job is queued through the API (the Train tab has its own test)."""

from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from playwright.sync_api import expect
from studio_page import choose, open_studio
from waiting import wait_for

pytestmark = pytest.mark.browser


def _noisy_reviews(path: Path) -> str:
    """Reviews whose label is wrong for every fourth row: the adapter makes mistakes."""
    lines = ["text,label"]
    for i in range(80):
        good = i % 2 == 0
        label = ("pos" if good else "neg") if i % 4 < 3 else ("neg" if good else "pos")
        words = "lovely fine great" if good else "awful poor bad"
        lines.append(f"the film was {words} number {i},{label}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _loaded(image) -> bool:
    return image.evaluate("img => img.complete && img.naturalWidth > 100")


def test_a_finished_job_shows_its_insights_in_both_tabs(studio, browser, shots, tmp_path):
    client = Client(studio.url, verbose=False)
    spec = {"model": "minilm", "steps": 6, "eval_every": 0, "name": "noisy"}
    job = client.predict(
        spec, handle_file(_noisy_reviews(tmp_path / "noisy.csv")), None, api_name="/enqueue"
    )

    def done():
        status = client.predict(job, api_name="/job_status")
        assert status["status"] in ("queued", "running", "done"), status
        return status if status["status"] == "done" else None

    status = wait_for(done, 300, f"job {job} to finish", poll_s=1)
    seen = client.predict(job, api_name="/job_insights")
    page = open_studio(browser, studio.url)
    page.get_by_role("tab", name="Jobs").click()
    choose(page, "job-select", f"#{job} · done · minilm on noisy.csv")
    block = page.locator("#insights")
    expect(block).to_be_visible()
    expect(block).to_contain_text("Validation insights")
    for part in ("insights-confusion-before", "insights-confusion"):
        image = page.locator(f"#{part} img")
        expect(image).to_be_visible()
        wait_for(lambda image=image: _loaded(image), 30, f"the {part} picture to load")
    per_class = page.locator("#insights-per-class")
    for header in ("class", "precision", "recall", "f1", "support", "f1 before"):
        expect(per_class).to_contain_text(header)
    expect(per_class).to_contain_text("neg")
    wrong = page.locator("#insights-wrong")
    expect(wrong).to_contain_text("confidence")
    if seen["after"]["wrong"]:  # the noisy rows the adapter follows the words on
        expect(wrong).to_contain_text(seen["after"]["wrong"][0]["text"])
    expect(page.locator("#insights-generation")).to_be_hidden()
    shots(page, "jobs-tab-insights")

    page.get_by_role("tab", name="Adapters").click()
    choose(page, "adapter-select", f"#{status['adapter_id']} noisy")
    adapter_block = page.locator("#adapter-insights")
    expect(adapter_block).to_be_visible()
    image = page.locator("#adapter-insights-confusion img")
    expect(image).to_be_visible()
    wait_for(lambda: _loaded(image), 30, "the adapter's confusion matrix to load")
    expect(page.locator("#adapter-insights-per-class")).to_contain_text("pos")
    shots(page, "adapters-tab-insights")
