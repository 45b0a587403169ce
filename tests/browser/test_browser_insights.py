"""Validation insights in a real browser, beyond the after-training walk: a job queued through
the API on noisy rows (so there are mistakes to list and sort), its block in the Jobs tab (the
wrong rows are the API's), and the same block on the adapter's view in the Adapters tab. The
page steps are studio_page's (open_insights checks pictures, tables and the confidence sort)."""

from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from playwright.sync_api import expect
from studio_page import choose, open_insights, open_studio
from waiting import wait_for

pytestmark = pytest.mark.browser
CLASSES = ("neg", "pos")


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


def test_a_finished_job_shows_its_insights_in_both_tabs(studio, browser, shots, tmp_path):
    client = Client(studio.url, verbose=False)
    # 80 rows: the default would hold none back; the insights need validation rows
    spec = {"model": "minilm", "steps": 6, "eval_every": 0, "name": "noisy", "val_fraction": 0.25}
    job = client.predict(
        spec, handle_file(_noisy_reviews(tmp_path / "noisy.csv")), None, api_name="/enqueue"
    )

    def done():
        status = client.predict(job, api_name="/job_status")
        assert status["status"] in ("queued", "running", "done"), status
        return status if status["status"] == "done" else None

    status = wait_for(done, 300, f"job {job} to finish", poll_s=1)
    wrong = client.predict(job, api_name="/job_insights")["after"]["wrong"]
    assert len(wrong) >= 2, wrong  # the flipped labels: enough rows for the sort to show
    page = open_studio(browser, studio.url)
    page.get_by_role("tab", name="Jobs").click()
    choose(page, "job-select", f"#{job} · done · minilm on noisy.csv")
    shown = open_insights(page, CLASSES)
    confidences = sorted((row["confidence"] for row in wrong), reverse=True)
    assert shown == pytest.approx(confidences[: len(shown)], abs=1e-3)  # as shown, rounded
    expect(page.locator("#insights-wrong")).to_contain_text(wrong[0]["text"])
    shots(page, "jobs-tab-insights")

    page.get_by_role("tab", name="Adapters").click()
    choose(page, "adapter-select", f"#{status['adapter_id']} noisy")
    open_insights(page, CLASSES, prefix="adapter-insights")
    shots(page, "adapters-tab-insights")
