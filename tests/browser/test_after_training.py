"""After training, in a real browser: a new user signs in, trains two short runs with different
settings, opens the first run's validation insights (confusion matrices, per-class table, wrong
rows sorted by confidence), compares the two runs, predicts a file with the first adapter,
downloads the result from the Jobs tab, and tries to publish the second adapter without a token.

The studio asks for a password (so every action runs as that person, with the owner checks of
a shared studio); one worker takes the jobs in the order they were queued.
"""

import csv
import re

import pytest
from playwright.sync_api import expect
from studio_page import (
    NEWCOMER,
    ROOT,
    compare_runs,
    download_prediction,
    fill_prediction,
    open_insights,
    plot_drawn,
    queue_prediction,
    queue_training,
    select_job,
    short_run,
    sign_in,
    try_publish,
    upload_dataset,
    wait_done,
)

from app.jobs_tab import LOSS_COLORS

pytestmark = pytest.mark.browser
STEPS, EVAL_EVERY = 6, 3  # tiny runs: two evaluations each, besides the untuned start's
ROWS = 12  # rows of the file to predict
CLASSES = ("negative", "positive")


@pytest.fixture
def new_rows_csv(tmp_path):
    """Rows to predict: the sample's validation texts under the training file's column name."""
    with open(ROOT / "examples/data/sentiment_eval.csv", newline="") as source:
        rows = list(csv.DictReader(source))[:ROWS]
    path = tmp_path / "new_reviews.csv"
    with open(path, "w", newline="") as target:
        writer = csv.writer(target)
        writer.writerow(["ref", "comment"])
        writer.writerows([f"r{i}", row["text"]] for i, row in enumerate(rows))
    return path


def test_new_user_trains_inspects_compares_predicts_and_publishes(
    signed_in_studio, browser, shots, reviews_csv, new_rows_csv, tmp_path
):
    page = sign_in(
        browser, signed_in_studio.url, *NEWCOMER, filled=lambda form: shots(form, "sign-in-form")
    )
    expect(page.locator("#model-summary")).to_contain_text("IA3 scales", timeout=60_000)
    shots(page, "signed-in")

    upload_dataset(page, reviews_csv, "comment", "verdict")
    expect(page.locator("#data-note .note-ok")).to_contain_text("Read 300 rows")
    short_run(
        page,
        steps=STEPS,
        eval_every=EVAL_EVERY,
        max_length=32,
        lr="0.003",
        name="slow-lr",
        val_share="10%",
    )
    shots(page, "first-run-settings")
    first = queue_training(page)
    shots(page, "first-run-queued")

    page.get_by_role("tab", name="Train").click()
    short_run(
        page,
        steps=STEPS,
        eval_every=EVAL_EVERY,
        max_length=32,
        lr="0.03",
        name="fast-lr",
        val_share="10%",
    )
    shots(page, "second-run-settings")
    second = queue_training(page)
    assert second == first + 1
    progress = page.locator("#job-progress")
    # The page stays on the job just queued while the first one trains and the timer redraws.
    expect(page.locator("#job-select input")).to_have_value(re.compile(rf"^#{second} · "))
    expect(page.locator("#jobs-table")).to_contain_text(str(first))
    shots(page, "second-run-queued-and-followed")

    wait_done(page, second)  # the worker takes jobs in order: the first is done by then
    expect(progress).to_contain_text(f"Step {STEPS} of {STEPS} (100 %)")
    adapter_pattern = re.compile(r"[Aa]dapter #?(\d+)")
    fast = int(adapter_pattern.search(progress.inner_text()).group(1))
    expect(page.locator("#insights")).to_be_visible()  # a finished run shows its insights
    shots(page, "second-run-done")

    select_job(page, first)  # a person's own pick sticks through the timer's redraws
    wait_done(page, first)
    log = page.locator("#job-log textarea")
    expect(log).to_have_value(re.compile(rf"eval at step {EVAL_EVERY}: "))
    expect(log).to_have_value(re.compile(r"eval before tuning \(step 0\): "))
    expect(log).not_to_have_value(re.compile(r"eval at step 0\b"))
    plot_drawn(page, "loss-plot")
    for color in LOSS_COLORS.values():  # training and validation loss, each in its colour
        expect(page.locator(f"#loss-plot .mark-line path[stroke='{color}']")).to_be_visible()
    plot_drawn(page, "metric-plot")
    adapter = int(adapter_pattern.search(progress.inner_text()).group(1))
    shots(page, "first-run-done-with-curves")
    open_insights(page, CLASSES)
    shots(page, "insights")
    compare_runs(page, [first, second], differing=("0.003", "0.03"))
    shots(page, "compare-runs")

    fill_prediction(page, f"#{adapter} slow-lr", new_rows_csv)
    shots(page, "prediction-file-and-adapter")
    predicted = queue_prediction(page)
    wait_done(page, predicted)
    expect(progress).to_contain_text(f"Row {ROWS} of {ROWS}")
    # The log names the device the worker (left to choose) predicted on, never "auto".
    expect(log).to_have_value(re.compile(rf"started: predicting {ROWS} rows on (cpu|cuda|mps)"))
    expect(page.locator("#loss-plot")).to_be_hidden()  # a prediction has rows, not curves
    expect(page.locator("#metric-plot")).to_be_hidden()
    expect(page.locator("#jobs-table")).to_contain_text(f"#{adapter} slow-lr")
    shots(page, "prediction-done")

    saved = download_prediction(page, tmp_path)
    with open(saved, newline="") as file:
        rows = list(csv.DictReader(file))
    with open(new_rows_csv, newline="") as file:
        given = list(csv.DictReader(file))
    assert len(rows) == ROWS
    assert list(rows[0]) == ["ref", "comment", "predicted_label"] + [f"prob_{c}" for c in CLASSES]
    assert [(r["ref"], r["comment"]) for r in rows] == [(g["ref"], g["comment"]) for g in given]
    for row in rows:
        assert row["predicted_label"] in CLASSES
        probs = {c: float(row[f"prob_{c}"]) for c in CLASSES}
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-3)
        assert row["predicted_label"] == max(probs, key=probs.get)

    try_publish(page, "newcomer/fast-lr", adapter=f"#{fast} fast-lr")
    shots(page, "publish-without-token")
