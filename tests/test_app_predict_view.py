"""The studio's predict pieces in-process: the Predict block's queueing and notes, the adapter
choices, and the Jobs tab's download button and row count for a predict job."""

from __future__ import annotations

import html

import gradio as gr
import pandas as pd
import pytest
import train_models as tm

from app import job_actions, jobs_tab, predict_view
from app.auth import acting_as
from app.studio_config import StudioConfig
from jobs import queue, registry
from jobs.access import LOCAL
from jobs.worker import Worker

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    return tm.tiny_classifier(tmp_path_factory.mktemp("view"))[1]


def _rows(path, n=5) -> str:
    frame = pd.DataFrame({"review": [t for t, _ in tm.sentiment_rows(n)]})
    frame.to_csv(path, index=False)
    return str(path)


def test_the_block_queues_a_prediction_and_the_jobs_tab_offers_its_file(
    db_url, adapter_dir, tmp_path
):
    adapter = registry.register_adapter(adapter_dir, name="mine", db=db_url)
    config = StudioConfig(data_dir=tmp_path / "data")
    with acting_as(LOCAL):
        choices = predict_view.adapter_choices()
        assert choices[0][1] == str(adapter) and "mine" in choices[0][0]
        assert choices[-1] == ("base model only", "base")
        note, job_id = predict_view._queue(str(adapter), "", _rows(tmp_path / "r.csv"), "", config)
        assert "queued" in note and job_id is not None
        job = queue.get_job(job_id, db=db_url)
        assert job.kind == "predict" and not list((tmp_path / "data" / "uploads").glob("*/*"))
        waiting, drawn = predict_view.download_update(job_id, None)
        assert waiting == gr.skip() and drawn is None  # queued: nothing to download yet
        assert Worker(db_url, device="cpu").run_one()
        button, drawn = predict_view.download_update(job_id, None)
        assert isinstance(button, gr.DownloadButton) and button.visible
        assert (
            pd.read_csv(button.value["path"] if isinstance(button.value, dict) else button.value)[
                "predicted_label"
            ]
            .notna()
            .all()
        )
        again, _ = predict_view.download_update(job_id, drawn)
        assert again == gr.skip()  # unchanged: neither copied nor redrawn again
        lines = job_actions.log_lines(job_actions.job_events(job_id))
        assert any(line.endswith("started: predicting 5 rows on cpu") for line in lines)
        assert any("Predicted 5 rows" in line for line in lines)
        shown = jobs_tab.progress_html({**queue.get_job(job_id, db=db_url).__dict__})
        assert "Row 5 of 5" in shown


def test_the_block_shows_refusals_under_the_button(db_url, adapter_dir, tmp_path):
    adapter = registry.register_adapter(adapter_dir, db=db_url)
    config = StudioConfig(data_dir=tmp_path / "data")
    with acting_as(LOCAL):
        note, job_id = predict_view._queue(
            str(adapter), "", _rows(tmp_path / "r.csv"), "body", config
        )
        assert job_id is None and "Column 'body' not found" in html.unescape(note)
        note, job_id = predict_view._queue(str(adapter), "", None, "", config)
        assert job_id is None and "No file to predict" in note
        note, job_id = predict_view._queue("base", "", _rows(tmp_path / "s.csv"), "", config)
        assert job_id is None and "name the base model" in note
    assert queue.list_jobs(db=db_url) == []
