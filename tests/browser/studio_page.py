"""Helpers that drive the studio's page the way a person does, shared by the browser tests.

Each waits on what the page shows (never on a clock) and asserts what the step promises.
"""

import re
from pathlib import Path

from playwright.sync_api import TimeoutError as PageTimeout
from playwright.sync_api import expect

ROOT = Path(__file__).resolve().parents[2]
NEWCOMER = ("newcomer", "newcomer-password-2026")  # the signed-in studio's one account
# A server path in a message (the UI must never show one).
SERVER_PATH = re.compile(r"(/(tmp|home|root|work|usr|var|srv|opt)/|site-packages|\.py\b)")


def open_studio(context, url: str):
    """A new page on the studio, ready to use."""
    page = context.new_page()
    page.goto(url, wait_until="domcontentloaded")
    page.locator(".gradio-container").wait_for()
    page.locator("#intro").wait_for(timeout=60_000)
    return page


def sign_in(context, url: str, name: str, password: str, filled=None):
    """A new page through the studio's sign-in form, signed in as `name` and ready to use;
    `filled(page)` is called once the form is filled in (to take its picture)."""
    page = context.new_page()
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_label(re.compile("username", re.I)).fill(name)
    page.get_by_label(re.compile("password", re.I)).fill(password)
    if filled is not None:
        filled(page)
    page.get_by_role("button", name=re.compile("log ?in|sign ?in", re.I)).click()
    page.locator("#intro").wait_for(timeout=60_000)
    expect(page.locator("#signed-in-as")).to_contain_text(f"Signed in as {name}")
    return page


def type_into(box, text: str, tries: int = 3) -> None:
    """Fill `box` with `text` and check it holds it. A box in an accordion opened a moment ago
    can still be mounting and reset itself to empty (seen once in CI on the API key's name; no
    server answer writes that box). It is filled again only when it reads back empty, so any
    other value still fails."""
    for _ in range(tries - 1):
        box.fill(text)
        try:
            expect(box).to_have_value(text, timeout=5_000)
            return
        except AssertionError:
            expect(box).to_have_value("")  # reset by the page: fill again; anything else fails
    box.fill(text)
    expect(box).to_have_value(text)


def choose(page, elem_id: str, option: str):
    """Pick `option` in the dropdown with `elem_id`, as a person does with the mouse."""
    page.locator(f"#{elem_id} input").click()
    page.locator(f"#{elem_id} li[role=option][aria-label='{option}']").click()


def choose_starting(page, elem_id: str, start: str):
    """Pick the option of the dropdown `elem_id` whose text starts with `start` (job and adapter
    choices carry a status or details after their number)."""
    page.locator(f"#{elem_id} input").click()
    page.locator(f"#{elem_id} li[role=option][aria-label^='{start}']").first.click()


def pick_upload(page) -> None:
    """Switch the Train tab's data source to "Upload a file" and wait for the studio's answer
    (its note asks for a file): an upload sent before it could be answered first and then be
    overwritten by this older answer, leaving the note at "Choose a sample or upload a file"."""
    page.get_by_label("Upload a file").check()
    expect(page.locator("#data-note")).to_contain_text("upload a file")


def upload_dataset(page, path: Path, text_column: str, label_column: str):
    """Upload `path` in the Train tab and map its text and label columns."""
    pick_upload(page)
    page.locator("#data-upload input[type=file]").set_input_files(str(path))
    expect(page.locator("#data-note .note-ok")).to_contain_text("Read")
    choose(page, "text-column", text_column)
    choose(page, "label-column", label_column)
    expect(page.locator("#mapping-note .note-ok")).to_contain_text("Columns mapped")


def set_sliders(page, values: dict[str, int]) -> None:
    """Type each value into its slider's number box until all of them hold together: on a busy
    machine a box may be drawn again after the accordion opens, or after a later control
    changes, and drop what was typed (seen as the slider's start value coming back)."""
    boxes = {key: page.locator(f"#{key} input[type=number]") for key in values}
    for _ in range(4):
        for key, box in boxes.items():
            if box.input_value() != str(values[key]):
                box.fill(str(values[key]))
                box.press("Tab")
        page.wait_for_timeout(500)
        if all(box.input_value() == str(values[key]) for key, box in boxes.items()):
            break
    for key, box in boxes.items():
        expect(box).to_have_value(str(values[key]))


def short_run(
    page, steps: int, eval_every: int, max_length: int = 64, lr=None, name=None, val_share=None
):
    """Set a short run in the Train tab's advanced settings (opened when closed): batch 8,
    `steps`, an evaluation every `eval_every` steps, optionally a learning rate, a validation
    share (e.g. "10%": below 500 rows the default holds none back) and a name."""
    if not page.locator("#steps").is_visible():
        page.get_by_text("Advanced settings").click()
    choose(page, "batch-size", "8")
    if lr is not None:
        choose(page, "lr", lr)
    if val_share is not None:
        choose(page, "val-fraction", val_share)
    set_sliders(page, {"steps": steps, "eval-every": eval_every, "max-length": max_length})
    if name is not None:
        box = page.locator("#adapter-name textarea, #adapter-name input").first
        box.fill(name)
        expect(box).to_have_value(name)


def queue_training(page) -> int:
    """Press "Queue training": the Jobs tab opens on the new job. Returns its id."""
    return _queue_new_job(page, "queue-button", "queue-note")


def _queue_new_job(page, button_id: str, note_id: str) -> int:
    """Press `button_id`; its note (which may still name the previous job) names a new job,
    and the Jobs tab opens on it. Returns the job's id."""
    note = page.locator(f"#{note_id}")
    before = re.search(r"Job #(\d+) queued", note.text_content() or "")
    other = rf"(?!{before.group(1)}\b)" if before else ""  # not the job it named before
    page.locator(f"#{button_id}").click()
    expect(note.locator(".note-ok")).to_contain_text(re.compile(rf"Job #{other}\d+ queued"))
    job_id = int(re.search(r"Job #(\d+) queued", note.text_content()).group(1))
    expect(page.get_by_role("tab", name="Jobs")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#job-progress")).to_contain_text(f"Job #{job_id} ·")
    return job_id


def step_shown(page) -> int:
    match = re.search(r"Step (\d+) of", page.locator("#job-progress").inner_text())
    return int(match.group(1)) if match else 0


def select_job(page, job_id: int):
    """Follow job `job_id` in the Jobs tab, picked in its dropdown."""
    choose_starting(page, "job-select", f"#{job_id} ·")
    expect(page.locator("#job-progress")).to_contain_text(f"Job #{job_id} ·")


def wait_done(page, job_id: int, timeout: float = 600_000):
    """Until the followed job `job_id` shows as done (it stays the one followed meanwhile)."""
    progress = page.locator("#job-progress")
    expect(progress.locator(".badge-done")).to_be_visible(timeout=timeout)
    expect(progress).to_contain_text(f"Job #{job_id} ·")


# Whether the block `id`'s whole drawing (axis titles, legend) lies inside the block: Gradio
# hides what spills over its fixed height.
_DRAWING_FITS = """id => {
    const block = document.getElementById(id);
    const drawing = block && block.querySelector('.vega-embed svg.marks');
    if (!drawing) return false;
    const outer = block.getBoundingClientRect(), inner = drawing.getBoundingClientRect();
    return inner.height > 0 && inner.bottom <= outer.bottom + 1 && inner.right <= outer.right + 1;
}"""


def plot_drawn(page, elem_id: str):
    """The plot `elem_id` is shown, Vega has drawn a line in it (an SVG path with a size) and
    the whole drawing fits in the plot's block (nothing cut off at the bottom)."""
    expect(page.locator(f"#{elem_id} .vega-embed .mark-line path").first).to_be_visible()
    waited(page, _DRAWING_FITS, elem_id, f"#{elem_id}'s drawing to fit in its block (cut off?)")


def waited(page, script: str, arg, what: str):
    """Wait until `script(arg)` is true in the page; failing, name `what` was waited for."""
    try:
        page.wait_for_function(script, arg=arg)
    except PageTimeout as error:
        raise AssertionError(f"Waited in vain for {what}") from error


def fill_prediction(page, adapter: str, path: Path):
    """In the Predict tab, choose the adapter whose choice starts with `adapter` ("#1 name")
    and upload `path`."""
    page.get_by_role("tab", name="Predict").click()
    choose_starting(page, "predict-adapter", adapter)
    expect(page.locator("#predict-base")).to_be_hidden()  # the adapter brings its own base
    page.locator("#predict-file input[type=file]").set_input_files(str(path))
    expect(page.locator(f"#predict-file a[href*='{path.name}']").first).to_be_attached()


def queue_prediction(page) -> int:
    """Press "Predict the file": the Jobs tab opens on the predict job. Returns its id."""
    return _queue_new_job(page, "predict-button", "predict-note")


def download_prediction(page, folder: Path) -> Path:
    """Save the followed predict job's file with the Jobs tab's download button."""
    button = page.locator("#prediction-download")
    expect(button).to_be_visible()
    with page.expect_download() as download:
        button.click()
    target = folder / download.value.suggested_filename
    download.value.save_as(target)
    return target


def open_insights(page, classes: tuple[str, ...], prefix: str = "insights") -> list[float]:
    """The shown validation insights of a classifier (the Jobs tab's block, or with `prefix`
    "adapter-insights" the Adapters tab's): the confusion matrices after and before tuning are
    drawn images, the per-class table has its columns and names one of `classes`, and the wrong
    rows sort by confidence with the header's menu. Returns the confidences shown (descending)."""
    insights = page.locator(f"#{prefix}")
    expect(insights).to_be_visible()
    expect(insights).to_contain_text("Validation insights")
    for part in ("confusion", "confusion-before"):
        image = page.locator(f"#{prefix}-{part} img").first
        expect(image).to_be_visible()
        image.scroll_into_view_if_needed()
        loaded = "image => image.complete && image.naturalWidth > 0"
        waited(page, loaded, image.element_handle(), f"#{prefix}-{part}'s picture to load")
    per_class = page.locator(f"#{prefix}-per-class")
    for header in ("class", "precision", "recall", "f1", "support", "f1 before"):
        expect(per_class).to_contain_text(header)
    names = re.compile("|".join(re.escape(name) for name in classes))
    expect(per_class).to_contain_text(names)
    expect(page.locator(f"#{prefix}-generation")).to_be_hidden()  # a classifier's
    expect(page.locator(f"#{prefix}-wrong")).to_contain_text("confidence")
    sort_by_confidence(page, f"{prefix}-wrong", "ascending")
    return sort_by_confidence(page, f"{prefix}-wrong", "descending")


# The numbers in column `column` of the table `id`, in the order shown (rows top to bottom).
_COLUMN_SHOWN = """([id, column]) => [...document.querySelectorAll(`#${id} .virtual-row`)]
    .sort((a, b) => a.getBoundingClientRect().top - b.getBoundingClientRect().top)
    .map(row => row.querySelector(`[role=gridcell][data-col="${column}"]`))
    .filter(cell => cell !== null)
    .map(cell => parseFloat(cell.innerText))"""


def sort_by_confidence(page, table_id: str, order: str) -> list[float]:
    """Sort the table `table_id` by its confidence column with the header's menu ("Sort
    ascending" or "Sort descending"), as a person does; waits until the rows shown are in that
    order and returns the confidences shown."""
    header = page.locator(f"#{table_id} th[title='confidence']")
    column = header.get_attribute("data-heading")
    header.hover()
    header.locator("button.cell-menu-button").click()
    page.get_by_role("menuitem", name=f"Sort {order}").click()
    in_order = "(a, b) => a <= b" if order == "ascending" else "(a, b) => a >= b"
    waited(
        page,
        f"""args => {{ const seen = ({_COLUMN_SHOWN})(args);
            return seen.length > 0 && seen.every((v, i) => i === 0 || ({in_order})(seen[i - 1], v));
        }}""",
        [table_id, column],
        f"#{table_id}'s rows in {order} order of confidence",
    )
    return page.evaluate(_COLUMN_SHOWN, [table_id, column])


def compare_runs(page, job_ids: list[int], differing: tuple[str, ...]):
    """Compare `job_ids` in the Jobs tab's "Compare runs": the settings table shows each of the
    `differing` values (a setting the runs do not share), the plot is drawn, and each run's
    adapter is linked."""
    page.get_by_text("Compare runs").click()
    expect(page.locator("#compare-jobs")).to_be_visible()
    for job_id in job_ids:
        choose_starting(page, "compare-jobs", f"#{job_id} ")
    page.keyboard.press("Escape")  # close the open option list
    page.locator("#compare-button").click()
    settings = page.locator("#compare-settings")
    for value in differing:
        expect(settings).to_contain_text(value)
    expect(page.locator("#compare-metrics")).to_contain_text(re.compile(r"\d"))
    plot_drawn(page, "compare-plot")
    legend = page.locator("#compare-plot .role-legend")
    for job_id in job_ids:  # the legend (inside the block: plot_drawn) names each run's curves
        expect(legend).to_contain_text(f"#{job_id} train loss")
    links = page.locator("#compare-links a[href*='adapters/']")
    expect(links).to_have_count(len(job_ids))


def try_publish(page, repo: str, adapter: str | None = None):
    """Try to publish the Adapters tab's adapter (the one whose choice starts with `adapter`,
    "#2 name", when given) to `repo` without a token on a closed network: the note names the
    missing token or the offline Hub, with no traceback and no server path."""
    page.get_by_role("tab", name="Adapters").click()
    if adapter is not None:
        choose_starting(page, "adapter-select", adapter)
        expect(page.locator("#adapter-header")).to_contain_text(adapter.split()[-1])
    page.get_by_text("Publish to the Hugging Face Hub").click()
    expect(page.locator("#publish-private input")).to_be_checked()  # private by default
    box = page.locator("#publish-repo textarea, #publish-repo input").first
    box.fill(repo)
    expect(box).to_have_value(repo)
    page.locator("#publish-button").click()
    note = page.locator("#publish-note")
    expect(note).to_contain_text(re.compile("token|offline|network|reach", re.I))
    expect(note).not_to_contain_text("Traceback")
    assert not SERVER_PATH.search(note.inner_text()), note.inner_text()
