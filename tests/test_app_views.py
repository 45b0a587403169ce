"""The studio's pure pieces: progress card, curves, log, notes, error boundary, command, API names."""

import argparse
import logging

import gradio as gr
import pytest

from app import api, job_actions, jobs_tab, studio_cli
from app.main import build_studio
from app.messages import explain, field_note, shown_as_error
from ia3engine.errors import DataError, SpecError


def job(**fields):
    base = {
        "id": 7,
        "status": "running",
        "spec": {"model": "minilm", "data": "/x/sentiment_train.csv"},
        "step": 30,
        "total_steps": 120,
        "eta_s": 95.0,
        "loss": 0.4321,
        "message": None,
        "adapter_id": None,
        "created_at": "2026-01-02T03:04:05",
    }
    base.update(fields)
    return base


def test_progress_card_shows_step_share_eta_and_loss_of_a_running_job():
    card = jobs_tab.progress_html(job())
    assert "Step 30 of 120 (25 %)" in card
    assert "ETA 1:35" in card
    assert "loss 0.4321" in card
    assert 'style="width:25.0%"' in card
    assert "minilm on sentiment_train.csv" in card


def test_progress_card_of_a_finished_job_is_full_and_names_its_adapter():
    card = jobs_tab.progress_html(job(status="done", step=120, adapter_id=3))
    assert 'style="width:100.0%"' in card
    assert "Adapter #3 is ready." in card
    assert "ETA" not in card


def test_progress_card_escapes_a_failure_message():
    card = jobs_tab.progress_html(job(status="failed", message="<b>column 'x'</b> not found"))
    assert "&lt;b&gt;column" in card and "<b>column" not in card


def test_page_shows_the_running_job_first_then_queued_then_newest():
    jobs = [job(id=5, status="done"), job(id=4, status="queued"), job(id=3, status="running")]
    assert jobs_tab.default_job(jobs) == 3
    assert jobs_tab.default_job(jobs[:2]) == 4
    assert jobs_tab.default_job(jobs[:1]) == 5
    assert jobs_tab.default_job([]) is None


def test_jobs_table_has_one_row_per_job_with_progress_and_adapter():
    table = jobs_tab.jobs_table([job(), job(id=6, status="done", step=120, adapter_id=2)])
    assert list(table["job"]) == [7, 6]
    assert list(table["progress"]) == ["30/120", "120/120"]
    assert list(table["adapter"]) == ["", "#2"]


def test_curves_split_train_loss_from_eval_metrics():
    events = [
        {"type": "step", "data": {"step": 1, "loss": 0.9}},
        {"type": "step", "data": {"step": 2, "loss": 0.7}},
        {"type": "eval", "data": {"step": 2, "metrics": {"loss": 0.8, "accuracy": 0.75}}},
        {"type": "log", "data": {"message": "hello"}},
    ]
    curves = job_actions.curves(events)
    assert [p["value"] for p in curves["loss"]] == [0.9, 0.7, 0.8]
    assert {p["series"] for p in curves["loss"]} == {"train loss", "eval loss"}
    assert curves["metrics"] == [{"step": 2, "value": 0.75, "series": "eval accuracy"}]


def test_curve_frame_is_numeric_and_absent_without_points():
    frame = jobs_tab._curve_frame([{"step": 1, "value": 0.5, "series": "train loss"}])
    assert str(frame["step"].dtype) == "float64" and str(frame["value"].dtype) == "float64"
    assert jobs_tab._curve_frame([]) is None


def test_log_lines_leave_out_steps_and_keep_the_tail():
    events = [
        {"type": "step", "time": "2026-01-01T10:00:00", "data": {"step": i}} for i in range(5)
    ]
    events += [
        {"type": "log", "time": f"2026-01-01T10:00:0{i}", "data": {"message": f"line {i}"}}
        for i in range(5)
    ]
    events.append({"type": "failed", "time": "2026-01-01T10:00:09", "data": {"message": "boom"}})
    lines = job_actions.log_lines(events, tail=3)
    assert lines == ["10:00:03 line 3", "10:00:04 line 4", "10:00:09 failed: boom"]


def test_field_note_escapes_html_and_lists_several_problems():
    note = field_note("steps is 0; use 1 or more.\n<script>x</script>")
    assert note.count("<li>") == 2
    assert "&lt;script&gt;" in note and "<script>" not in note
    assert field_note("") == ""
    assert "note-ok" in field_note("fine", "ok")


def test_boundary_shows_ia3_messages_as_written():
    wrapped = shown_as_error(lambda: (_ for _ in ()).throw(SpecError(["steps is 0; use 1."])))
    with pytest.raises(gr.Error) as caught:
        wrapped()
    assert caught.value.message == "steps is 0; use 1."


def test_boundary_logs_the_traceback_of_an_unexpected_error_and_shows_a_short_message(caplog):
    def broken():
        raise KeyError("internal detail")

    with caplog.at_level(logging.ERROR), pytest.raises(gr.Error) as caught:
        shown_as_error(broken)()
    assert caught.value.message.startswith("Something went wrong (KeyError")
    assert "Traceback" not in caught.value.message
    assert any(record.exc_info for record in caplog.records)


def test_explain_keeps_data_errors_as_written():
    assert explain(DataError("Column 'label' not found.")) == "Column 'label' not found."


def test_studio_command_has_host_port_data_dir_and_worker_flags():
    parser = argparse.ArgumentParser()
    studio_cli.add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["studio", "--port", "8000", "--workers", "2", "--no-worker"])
    assert (args.host, args.port, args.workers, args.no_worker) == ("127.0.0.1", 8000, 2, True)
    assert args.func is studio_cli.run_studio


def test_every_action_has_a_named_api_endpoint_and_ui_events_stay_private():
    demo = build_studio()
    public = {fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public"}
    assert {fn.__name__ for fn in api.ENDPOINTS} <= public
    assert {"enqueue", "job_status", "predict", "download_adapter"} <= public
    # Page events (named after their handlers, e.g. "_show_model" or "lambda") stay private.
    assert not [name for name in public if name.startswith("_") or "lambda" in name]


def test_serve_command_has_host_port_and_data_dir_flags():
    parser = argparse.ArgumentParser()
    studio_cli.add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", "--host", "0.0.0.0", "--port", "9000"])
    assert (args.host, args.port, args.data_dir) == ("0.0.0.0", 9000, None)
    assert args.func is studio_cli.run_serve


def test_every_model_choice_runs_one_listener_that_keeps_the_last():
    """Switching the model's source and pressing Enter at once must not run two inspections in
    parallel whose older one lands last: every trigger feeds one listener, which a page runs
    one at a time and ends on the newest (Gradio's always_last)."""
    demo = build_studio()
    note = next(block for block in demo.blocks.values() if block.elem_id == "model-note")
    writers = [
        dep
        for dep in demo.fns.values()
        if note in dep.outputs and all(kind != "load" for _, kind in dep.targets)
    ]
    assert len(writers) == 1
    kinds = sorted(kind for _, kind in writers[0].targets)
    assert kinds == ["change", "change", "change", "submit", "submit"]
    assert writers[0].trigger_mode == "always_last"
