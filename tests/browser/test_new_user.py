"""A new user's first adapter, start to finish, in a real browser against a real studio.

Open the page, keep the default model, upload a CSV, map its columns, press the button,
watch the job (reloading the page half way), compare base and tuned in the playground,
then download the zip and load it with peft: the same probabilities as the studio's.
"""

import json
import re
import zipfile

import pytest
import torch
from gradio_client import Client
from peft import PeftModel
from playwright.sync_api import expect
from studio_page import (
    choose_starting,
    open_studio,
    queue_training,
    short_run,
    step_shown,
    upload_dataset,
)
from transformers import AutoModelForSequenceClassification, AutoTokenizer

pytestmark = pytest.mark.browser
STEPS = 16  # a real but short run of the bundled MiniLM: long enough to reload mid-way
TEXT = "The soup was cold and the waiter ignored us."


def test_new_user_trains_follows_compares_and_downloads(
    studio, browser, shots, reviews_csv, minilm_path, tmp_path
):
    page = open_studio(browser, studio.url)
    expect(page.locator("#model-summary")).to_contain_text("IA3 scales 24 modules", timeout=60_000)
    expect(page.locator("#model-summary")).to_contain_text("16,898 parameters")
    shots(page, "opened-with-defaults")

    upload_dataset(page, reviews_csv, "comment", "verdict")
    expect(page.locator("#data-note .note-ok")).to_contain_text("Read 300 rows")
    expect(page.locator("#class-balance")).to_contain_text("negative")
    expect(page.locator("#class-balance")).to_contain_text("positive")
    shots(page, "uploaded-and-mapped")

    short_run(page, steps=STEPS, eval_every=8)
    shots(page, "short-run-settings")
    job = queue_training(page)  # other tests may have queued jobs on this studio before

    progress = page.locator("#job-progress")
    expect(progress.locator(".badge-running")).to_be_visible(timeout=120_000)
    expect(progress).to_contain_text(re.compile(rf"Step [1-9]\d* of {STEPS}"), timeout=120_000)
    before_reload = step_shown(page)
    shots(page, "training")

    page.reload(wait_until="domcontentloaded")
    page.locator("#intro").wait_for(timeout=60_000)
    page.get_by_role("tab", name="Jobs").click()
    expect(progress).to_contain_text(f"Job #{job} ·")
    expect(progress).to_contain_text(re.compile(rf"Step \d+ of {STEPS}"))
    assert step_shown(page) >= before_reload
    shots(page, "after-reload-mid-training")

    second = open_studio(browser, studio.url)  # another tab sees the same job from the database
    second.get_by_role("tab", name="Jobs").click()
    expect(second.locator("#job-progress")).to_contain_text(
        f"Job #{job} · minilm on my_reviews.csv"
    )
    second.close()

    expect(progress.locator(".badge-done")).to_be_visible(timeout=600_000)
    expect(progress).to_contain_text(f"Step {STEPS} of {STEPS} (100 %)")
    expect(page.locator("#job-log textarea")).to_have_value(re.compile("finished"))
    adapter = int(re.search(r"[Aa]dapter #?(\d+)", progress.inner_text()).group(1))
    shots(page, "done")

    page.locator("#try-adapter").click()
    expect(page.get_by_role("tab", name="Playground")).to_have_attribute("aria-selected", "true")
    page.locator("#play-input textarea").fill(TEXT)
    page.locator("#play-run").click()
    expect(page.locator("#slot-base-title")).to_contain_text("Untuned base: minilm")
    expect(page.locator("#slot-1-title")).to_contain_text(f"#{adapter} my_reviews-minilm")
    for slot in ("slot-base-label", "slot-1-label"):
        expect(page.locator(f"#{slot}")).to_contain_text("%")
    shots(page, "playground-base-and-tuned")

    page.get_by_role("tab", name="Adapters").click()
    choose_starting(page, "adapter-select", f"#{adapter} my_reviews-minilm")
    expect(page.locator("#adapter-header")).to_contain_text("my_reviews-minilm")
    shots(page, "adapters")
    with page.expect_download() as download:
        page.locator("#adapter-download").click()
    archive = tmp_path / "adapter.zip"
    download.value.save_as(archive)

    share = browser.new_page()
    share.goto(studio.url + f"adapters/{adapter}")
    expect(share.locator("h1")).to_contain_text("my_reviews-minilm")
    expect(share.locator("#download-zip")).to_be_visible()
    shots(share, "share-page")

    client = Client(studio.url, verbose=False)
    studio_probs = client.predict(TEXT, [adapter], False, api_name="/predict")
    assert peft_probs(archive, minilm_path, tmp_path) == pytest.approx(
        studio_probs["adapters"][0]["probs"], abs=1e-4
    )


def peft_probs(archive, minilm_path, tmp_path) -> dict:
    """Class probabilities for TEXT from the downloaded zip loaded with peft."""

    folder = tmp_path / "unzipped"
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(folder)
    labels = json.loads((folder / "training_info.json").read_text())["labels"]
    base = AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=len(labels))
    model = PeftModel.from_pretrained(base, folder).eval()
    tokens = AutoTokenizer.from_pretrained(minilm_path)(TEXT, return_tensors="pt")
    with torch.no_grad():
        probs = model(**tokens).logits.softmax(-1)[0]
    return {label: float(p) for label, p in zip(labels, probs, strict=True)}
