"""The insights on the page, in-process: the confusion matrix PNG, the tables, and the Jobs and
Adapters tabs' blocks drawn from a job a real worker trained (no model loaded to draw)."""

from __future__ import annotations

import io

import gradio as gr
import jobs_support
import pandas as pd
import pytest
from PIL import Image
from train_models import save_tiny

from app import api, insights_chart, insights_view
from app.auth import acting_as
from app.main import build_studio
from ia3engine.errors import DataError
from ia3engine.training import insights
from ia3engine.training.spec import TrainSpec
from jobs import access, queue
from jobs.errors import AccessDeniedError
from jobs.worker import Worker

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LABELS = ["cat", "<b>dog</b>"]
SEEN = {
    "version": 1,
    "task": "classify",
    "labels": LABELS,
    "rows": 10,
    "rows_total": 12,
    "before": insights.classify_side(
        [f"r{i}" for i in range(10)], [0] * 5 + [1] * 5, [[0.6, 0.4]] * 10, LABELS
    ),
    "after": insights.classify_side(
        [f"r{i}" for i in range(10)],
        [0] * 5 + [1] * 5,
        [[0.9, 0.1]] * 4 + [[0.3, 0.7]] + [[0.2, 0.8]] * 4 + [[0.55, 0.45]],
        LABELS,
    ),
}


def test_the_confusion_matrix_is_a_png_shaded_by_each_rows_share():
    image = insights_chart.confusion_image([[9, 1], [0, 10]], ["neg", "pos"], "After")
    decoded = Image.open(io.BytesIO(insights_chart.png_bytes(image)))
    assert decoded.format == "PNG" and decoded.size == image.size
    assert decoded.width > 100 and decoded.height > 100
    # sample each cell near its corner (away from the count): a full row is dark, an empty one
    # light, the 10 % cell in between
    cell = max(22, min(72, 480 // 2))
    grid = _grid_origin(decoded, cell)
    shades = {
        (r, c): decoded.getpixel((grid[0] + c * cell + 3, grid[1] + r * cell + 3))
        for r in range(2)
        for c in range(2)
    }
    assert shades[(1, 1)] == insights_chart.DARK
    assert shades[(1, 0)] == insights_chart.LIGHT
    assert sum(shades[(0, 0)]) < sum(shades[(0, 1)]) < sum(insights_chart.LIGHT)


def _grid_origin(image: Image.Image, cell: int) -> tuple[int, int]:
    """The grid's top-left corner: the first pixel of the matrix's outline colour."""
    rgb = image.convert("RGB")
    for y in range(rgb.height):
        for x in range(rgb.width):
            if rgb.getpixel((x, y)) == insights_chart.GRID:
                return x + 1, y + 1
    raise AssertionError("no grid drawn")


def test_many_labels_draw_the_most_frequent_and_say_so():
    n = insights_chart.MAX_LABELS + 5
    counts = [[(i + 1) if i == j else 0 for j in range(n)] for i in range(n)]
    assert insights_chart._kept(counts, [str(i) for i in range(n)]) == list(range(5, n))
    image = insights_chart.confusion_image(counts, [f"label {i}" for i in range(n)], "After")
    assert image.width < 1000 and image.height < 1000


def test_the_tables_hold_scores_before_and_after_and_numeric_confidence():
    per_class = insights_view.per_class_table(SEEN)
    assert list(per_class.columns) == insights_view.PER_CLASS_HEADERS
    assert per_class["class"].tolist() == LABELS
    assert per_class["support"].tolist() == [5, 5]
    assert per_class["recall"].tolist() == [0.8, 0.8]
    assert per_class["recall before"].tolist() == [1.0, 0.0]
    wrong = insights_view.wrong_table(SEEN)
    assert list(wrong.columns) == insights_view.WRONG_HEADERS
    assert pd.api.types.is_float_dtype(wrong["confidence"])
    assert wrong["confidence"].tolist() == [0.7, 0.55]  # most confident first
    assert wrong.iloc[0]["probabilities"] == "<b>dog</b> 0.700 · cat 0.300"
    summary = insights_view.summary_html(SEEN)
    assert "10 of 12 validation rows" in summary and "0.500 before tuning → 0.800 after" in summary


def test_the_generation_table_puts_reference_and_generations_side_by_side():
    seen = {
        "task": "generate",
        "labels": [],
        "rows": 2,
        "rows_total": 2,
        "before": insights.generate_side(["p1", "p2"], ["a", "b"], ["x", "b"]),
        "after": insights.generate_side(["p1", "p2"], ["a", "b"], ["a", "b"]),
    }
    table = insights_view.generation_table(seen)
    assert list(table.columns) == insights_view.GENERATION_HEADERS
    assert table.values.tolist() == [
        ["p1", "a", "a", "yes", "x", "no"],
        ["p2", "b", "b", "yes", "b", "yes"],
    ]
    box, summary, before, after, per_class, wrong, generation = insights_view.shown(seen)
    assert box.visible and generation.visible
    assert not (before.visible or after.visible or per_class.visible or wrong.visible)
    assert "0.500 before tuning → 1.000 after" in summary


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_tiny("bert", tmp_path_factory.mktemp("tiny-bert"))


def test_the_tabs_show_a_trained_jobs_insights_to_its_owner_only(db_url, base, tmp_path):
    data = jobs_support.write_reviews(tmp_path / "reviews.csv")
    spec = TrainSpec(
        model=base, data=data, steps=4, batch_size=8, max_length=16, eval_every=2, val_fraction=0.25
    )
    job_id = queue.enqueue(spec, owner="ann", db=db_url)
    with acting_as(access.user("ann")):
        assert insights_view.job_view(job_id, None)[0].visible is False  # queued: none yet
        assert Worker(db_url, step_event_s=0).run_one()
        *parts, drawn = insights_view.job_view(job_id, None)
        box, summary, before, after, per_class, wrong, generation = parts
        assert box.visible and drawn == f"{job_id}:True"
        for picture in (before, after):  # PNG files in Gradio's cache, as the page gets them
            with Image.open(picture.value["path"]) as decoded:
                assert decoded.format == "PNG" and decoded.width > 100
        assert per_class.value["headers"] == insights_view.PER_CLASS_HEADERS
        assert [row[0] for row in per_class.value["data"]] == ["neg", "pos"]
        assert wrong.value["headers"] == insights_view.WRONG_HEADERS
        assert all(isinstance(row[3], float) for row in wrong.value["data"])  # sorts as numbers
        assert generation.visible is False
        # drawn once: the next tick skips
        assert all(
            isinstance(p, type(gr.skip())) for p in insights_view.job_view(job_id, drawn)[:-1]
        )
        adapter_id = queue.get_job(job_id, db=db_url).adapter_id
        adapter_parts = insights_view.adapter_view(adapter_id)
        assert adapter_parts[0].visible
        assert adapter_parts[4].value == per_class.value
        assert api.job_insights(job_id) == queue.job_insights(job_id, db=db_url)
    with acting_as(access.user("bob")):
        assert insights_view.job_view(job_id, None)[0].visible is False
        assert insights_view.adapter_view(adapter_id)[0].visible is False
        with pytest.raises(AccessDeniedError, match=f"No job #{job_id} among yours"):
            api.job_insights(job_id)
    predict_id = queue.insert_job(
        {"model": base, "data": data}, kind="predict", owner="ann", db=db_url
    )
    with acting_as(access.user("ann")):
        assert insights_view.job_view(predict_id, None)[0].visible is False
        with pytest.raises(DataError, match="no validation insights"):
            api.job_insights(predict_id)


def test_the_studio_has_both_blocks_and_the_named_endpoint():
    demo = build_studio()
    ids = {getattr(block, "elem_id", None) for block in demo.blocks.values()}
    wanted = {"insights", "adapter-insights"}
    wanted |= {f"insights-{part}" for part in insights_view.PARTS}
    wanted |= {f"adapter-insights-{part}" for part in insights_view.PARTS}
    assert wanted <= ids
    public = {fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public"}
    assert "job_insights" in public
