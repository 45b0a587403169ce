"""A person feeds the Train tab bad files and bad names: each gets a clear message by its field."""

import re

import pytest
from playwright.sync_api import expect
from studio_page import choose, open_studio, pick_upload

pytestmark = pytest.mark.browser


def upload(page, path):
    """Put `path` into the dataset upload, replacing any file already there."""
    clear = page.locator("#data-upload button[aria-label='Clear']")
    if clear.count():
        clear.click()
    page.locator("#data-upload input[type=file]").set_input_files(str(path))


def expect_problem(page, field: str, *words: str):
    """The field's note shows an error naming `words`, and never a traceback."""
    note = page.locator(f"#{field} .note-error")
    for word in words:
        expect(note).to_contain_text(re.compile(word, re.I))
    expect(page.locator(f"#{field}")).not_to_contain_text("Traceback")


@pytest.fixture
def bad_files(tmp_path):
    files = {
        "empty": tmp_path / "empty.csv",
        "binary": tmp_path / "photo.csv",
        "one_class": tmp_path / "one_class.csv",
        "reviews": tmp_path / "reviews.csv",
    }
    files["empty"].write_bytes(b"")
    files["binary"].write_bytes(bytes(range(256)) * 8)
    files["one_class"].write_text("text,label\ngreat film,positive\nloved it,positive\n")
    files["reviews"].write_text("review,stars\ngreat,5\nawful,1\nfine,3\nbad,1\n")
    return files


def test_bad_files_and_names_get_a_clear_message_next_to_the_field(
    studio, browser, shots, bad_files
):
    page = open_studio(browser, studio.url)
    expect(page.locator("#data-note .note-ok")).to_contain_text("Read")
    pick_upload(page)

    upload(page, bad_files["empty"])
    expect_problem(page, "data-note", "empty.csv", "empty")
    shots(page, "empty-file")

    upload(page, bad_files["binary"])
    expect_problem(page, "data-note", "photo.csv", "binary")
    expect(page.locator("#text-column")).not_to_contain_text("text")
    shots(page, "binary-file")

    upload(page, bad_files["one_class"])
    expect_problem(page, "mapping-note", "single class", "positive")
    page.locator("#queue-button").click()
    expect_problem(page, "queue-note", "single class")
    shots(page, "one-class-refused-at-queue")

    upload(page, bad_files["reviews"])
    expect(page.locator("#data-note .note-ok")).to_contain_text("Read 4 rows")
    choose(page, "label-column", "review")
    expect_problem(page, "mapping-note", "both 'review'", "two different columns")
    shots(page, "same-column-twice")

    page.get_by_label("Hugging Face Hub id").check()
    page.locator("#hub-id textarea, #hub-id input").first.fill("nobody/no-such-model")
    page.locator("#hub-id textarea, #hub-id input").first.press("Enter")
    expect_problem(page, "model-note", "nobody/no-such-model", "minilm")
    page.get_by_label("Local folder").check()
    page.locator("#model-folder textarea, #model-folder input").first.fill("/no/such/folder")
    page.locator("#model-folder textarea, #model-folder input").first.press("Enter")
    expect_problem(page, "model-note", "/no/such/folder", "does not exist")
    shots(page, "unknown-model-folder")

    page.get_by_role("tab", name="Playground").click()
    page.locator("#play-input textarea").fill("A warm, funny film.")
    page.locator("#play-run").click()
    expect_problem(page, "play-note", "adapter")
    shots(page, "playground-without-adapters")
