"""The Jobs tab's refresh in-process: which job stays selected, what a predict job shows, and the
log's wording of the untuned start's evaluation."""

from __future__ import annotations

import gradio as gr

from app import job_actions, jobs_tab
from app.auth import acting_as
from app.main import build_studio
from app.studio_config import StudioConfig
from jobs import queue
from jobs.access import LOCAL

TRAIN = {"model": "minilm", "data": "/x/reviews.csv", "steps": 8}
PREDICT = {"model": "minilm", "data": "/x/new.csv", "adapter_id": 1, "adapter_name": "reviews"}
# _refresh's outputs, in order (see its docstring).
TABLE, SELECTED, LOSS, METRICS = 0, 1, 4, 5


def _refresh(selected, drawn=None):
    with acting_as(LOCAL):
        return jobs_tab._refresh(selected, drawn or {}, StudioConfig())


def test_a_tick_sent_before_a_new_selection_does_not_put_the_old_job_back(db_url):
    """The timer's tick carries the selection of the moment it was sent. When it lands after
    the page moved on (a click on another job, or the jump to a job just queued), sending that
    selection back would undo the move: a tick only sends the dropdown's choices."""
    older = queue.insert_job(TRAIN, db=db_url)
    newer = queue.insert_job(TRAIN, db=db_url)  # queued while the page showed `older`
    outputs = _refresh(older)
    dropdown = outputs[SELECTED]
    assert isinstance(dropdown, gr.Dropdown)
    assert [value for _, value in dropdown.constructor_args["choices"]] == [newer, older]
    assert "value" not in dropdown.constructor_args
    assert older in list(outputs[TABLE]["job"]) and newer in list(outputs[TABLE]["job"])


def test_the_job_dropdown_takes_a_job_missing_from_the_choices_a_late_refresh_sent():
    """A refresh that read the jobs just before one was queued can land after the jump to it:
    the page then holds a job its choices lack, and the next refresh must still be taken."""
    demo = build_studio()
    dropdown = next(b for b in demo.blocks.values() if b.elem_id == "job-select")
    dropdown.choices = [("#1 · done · minilm on a.csv", 1)]  # what the late refresh sent
    assert dropdown.preprocess(2) == 2


def test_a_page_without_a_valid_selection_is_given_the_running_or_newest_job(db_url):
    first = queue.insert_job(TRAIN, db=db_url)
    second = queue.insert_job(TRAIN, db=db_url)
    assert _refresh(None)[SELECTED].constructor_args["value"] == second  # the newest queued
    assert queue.claim_job("w", db=db_url).id == first
    assert _refresh(None)[SELECTED].constructor_args["value"] == first  # the running one
    assert _refresh(second + 100)[SELECTED].constructor_args["value"] == first  # a gone job


def test_a_predict_job_hides_the_training_curves_and_names_its_adapter(db_url):
    train = queue.insert_job(TRAIN, db=db_url)
    predict = queue.insert_job(PREDICT, kind="predict", db=db_url)
    base = queue.insert_job({**PREDICT, "adapter_id": None}, kind="predict", db=db_url)
    outputs = _refresh(predict)
    assert outputs[LOSS].visible is False and outputs[METRICS].visible is False
    table = outputs[TABLE].set_index("job")
    assert table.loc[predict, "adapter"] == "#1 reviews"
    assert table.loc[base, "adapter"] == "base"
    assert table.loc[train, "adapter"] == ""
    shown = _refresh(train)
    assert shown[LOSS].visible is True and shown[METRICS].visible is True


def test_the_plots_come_back_when_a_training_job_follows_a_predict_job(db_url):
    predict = queue.insert_job(PREDICT, kind="predict", db=db_url)
    train = queue.insert_job(TRAIN, db=db_url)
    drawn = _refresh(predict)[-1]
    outputs = _refresh(train, drawn)
    assert outputs[LOSS].visible is True and outputs[METRICS].visible is True


def test_the_log_names_the_untuned_start_instead_of_a_step_0_after_later_evaluations():
    events = [
        {
            "type": "eval",
            "time": "2026-01-01T10:00:01",
            "data": {"step": 8, "metrics": {"f1": 0.5}},
        },
        {
            "type": "eval",
            "time": "2026-01-01T10:00:02",
            "data": {"step": 0, "metrics": {"f1": 0.25}, "before": True},
        },
        {"type": "eval", "time": "2026-01-01T10:00:03", "data": {"step": 16, "metrics": {"f1": 1}}},
    ]
    assert job_actions.log_lines(events) == [
        "10:00:01 eval at step 8: f1=0.5",
        "10:00:02 eval before tuning (step 0): f1=0.25",
        "10:00:03 eval at step 16: f1=1",
    ]


def test_the_loss_plot_names_the_validation_series_before_its_first_point():
    """The plot keeps the colours of its first drawing; validation loss comes later."""
    train = [{"step": 1, "value": 0.9, "series": "train loss"}]
    points = jobs_tab._every_loss_series(train)
    assert {p["series"] for p in points} == {"train loss", "eval loss"}
    assert [p for p in points if p["series"] == "eval loss"] == [
        {**train[0], "series": "eval loss"}
    ]
    both = train + [{"step": 2, "value": 0.8, "series": "eval loss"}]
    assert jobs_tab._every_loss_series(both) == both
    assert jobs_tab._every_loss_series([]) == []
