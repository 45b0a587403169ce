"""Predict jobs on the queue (SQLite and PostgreSQL): a real worker predicts an uploaded file
with a registered adapter, progress in rows, cancel, the time limit, the output kept as the
owner's dataset (quota), and owners: nobody else sees, cancels, downloads or borrows."""

from __future__ import annotations

import threading

import pandas as pd
import pytest
import train_models as tm
from waiting import wait_for

from ia3engine.errors import AdapterError, DataError
from ia3engine.serve.predict_file import predict_file
from ia3engine.training.loading import resolve_device
from jobs import access, access_limits, predict_jobs, queue, quota, registry
from jobs.access import LOCAL
from jobs.errors import AccessDeniedError, JobError
from jobs.worker import Worker

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ANN, BOB = access.user("ann"), access.user("bob")
ROOT = access.user("root", admins=["root"])
OPEN = access_limits.NO_LIMITS


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base, folder = tm.tiny_classifier(tmp_path_factory.mktemp("predict-jobs"))
    return {"base": base, "folder": folder}


@pytest.fixture
def upload(db_url, tmp_path):
    """Seven rows to predict, inside the data directory's uploads."""
    folder = tmp_path / "data" / "uploads" / "abc"
    folder.mkdir(parents=True)
    rows = tm.sentiment_rows(7, seed=5)
    frame = pd.DataFrame({"id": range(7), "review": [text for text, _ in rows]})
    frame.to_csv(folder / "rows.csv", index=False)
    return str(folder / "rows.csv")


def _adapter(trained, db_url, owner="ann") -> int:
    return registry.register_adapter(trained["folder"], owner=owner, db=db_url)


def test_a_worker_predicts_the_file_and_keeps_it_as_the_owners_dataset(db_url, trained, upload):
    adapter = _adapter(trained, db_url)
    job_id = access.enqueue_predict(upload, actor=ANN, adapter_id=adapter, limits=OPEN, db=db_url)
    job = queue.get_job(job_id, db=db_url)
    assert (job.kind, job.owner, job.base_model) == ("predict", "ann", trained["base"])
    assert job.spec["data"] == upload and job.spec["text_column"] == "review"
    assert job.spec["rows"] == 7 and job.spec["adapter_id"] == adapter
    before = quota.stored_bytes("ann", db=db_url)
    seen = []

    def predicting(*args, on_progress, **kwargs):
        def progress(done, total):
            seen.append((done, total))
            on_progress(done, total)

        return predict_file(*args, on_progress=progress, **kwargs)

    worker = Worker(db_url, step_event_s=0, predict_fn=predicting, device="cpu")
    assert worker.run_one() and not worker.run_one()
    job = queue.get_job(job_id, db=db_url)
    assert job.status == "done", job.message
    assert job.message.startswith("Predicted 7 rows")
    assert (job.step, job.total_steps) == (7, 7) and seen[-1] == (7, 7)
    steps = [e.data["step"] for e in queue.job_events(job_id, db=db_url) if e.type == "step"]
    assert steps[-1] == 7 and steps == sorted(steps)
    path = access.prediction_file(job_id, actor=ANN, db=db_url)
    assert path.suffix == ".csv" and path.name.startswith("rows.predictions-")
    out = pd.read_csv(path)
    assert list(out["id"]) == list(range(7))
    assert (out["prob_negative"] + out["prob_positive"]).tolist() == pytest.approx([1.0] * 7)
    size = predict_jobs.result_size(job, db=db_url)
    assert size == path.stat().st_size
    assert quota.stored_bytes("ann", db=db_url) == before + size
    assert quota.stored_bytes("bob", db=db_url) == 0


def test_a_worker_left_to_choose_names_the_device_it_predicts_on(db_url, trained, upload):
    adapter = _adapter(trained, db_url)
    job_id = access.enqueue_predict(upload, actor=ANN, adapter_id=adapter, limits=OPEN, db=db_url)
    given = []

    def predicting(*args, device, **kwargs):
        given.append(device)
        return predict_file(*args, device=device, **kwargs)

    assert Worker(db_url, predict_fn=predicting).run_one()  # no device: the best one there is
    assert queue.get_job(job_id, db=db_url).status == "done"
    events = queue.job_events(job_id, db=db_url)
    started = next(e.data for e in events if e.type == "started")
    assert started["device"] == str(resolve_device(None)) != "auto"
    assert given == [started["device"]]  # the device named is the one predicted on


def test_the_base_alone_needs_a_generative_model_and_says_so(db_url, trained, upload):
    job_id = access.enqueue_predict(upload, actor=LOCAL, model=trained["base"], db=db_url)
    assert queue.get_job(job_id, db=db_url).spec["adapter_name"] == predict_jobs.BASE_ALONE
    assert Worker(db_url, device="cpu").run_one()
    job = queue.get_job(job_id, db=db_url)
    assert job.status == "failed" and "encoder" in job.message and "/" not in job.message


def _gated(*args, should_stop, on_progress, **kwargs):
    """Real prediction that, after its first batch, waits until the worker asks it to stop."""

    def progress(done, total):
        on_progress(done, total)
        if done:
            wait_for(should_stop, what="the worker to ask the prediction to stop")

    return predict_file(
        *args, **{**kwargs, "batch_size": 2}, should_stop=should_stop, on_progress=progress
    )


def test_cancel_stops_between_batches_and_keeps_no_file(db_url, trained, upload):
    adapter = _adapter(trained, db_url)
    job_id = access.enqueue_predict(upload, actor=ANN, adapter_id=adapter, limits=OPEN, db=db_url)
    worker = Worker(db_url, step_event_s=0, cancel_poll_s=0.1, predict_fn=_gated, device="cpu")
    runner = threading.Thread(target=worker.run_one)
    runner.start()
    wait_for(lambda: queue.get_job(job_id, db=db_url).step, what="the first batch")
    access.cancel_job(job_id, actor=ANN, db=db_url)
    runner.join(60)
    job = queue.get_job(job_id, db=db_url)
    assert (
        job.status == "cancelled" and job.message == "Cancelled at row 2 of 7; nothing was written."
    )
    assert job.result_blob_id is None
    with pytest.raises(JobError, match="ready once it is done"):
        access.prediction_file(job_id, actor=ANN, db=db_url)


def test_a_prediction_past_the_time_limit_fails_saying_so(db_url, trained, upload):
    adapter = _adapter(trained, db_url, owner=None)
    spec = predict_jobs.predict_spec("", upload, adapter=registry.get_adapter(adapter, db=db_url))
    job_id = predict_jobs.enqueue_predict(spec, max_seconds=0.05, db=db_url)
    assert Worker(db_url, predict_fn=_gated, device="cpu").run_one()
    job = queue.get_job(job_id, db=db_url)
    assert job.status == "failed" and "longer than this studio allows" in job.message
    assert "IA3_MAX_JOB_MINUTES" in job.message and job.result_blob_id is None


def test_everything_is_checked_before_a_job_is_queued(db_url, trained, upload, tmp_path):
    adapter = _adapter(trained, db_url)
    with pytest.raises(DataError, match="Did you mean 'review'"):
        access.enqueue_predict(
            upload, actor=ANN, adapter_id=adapter, text_column="Review ", limits=OPEN, db=db_url
        )
    with pytest.raises(DataError, match="cap of 5 rows"):
        limits = access_limits.Limits(max_rows=5)
        access.enqueue_predict(upload, actor=ANN, adapter_id=adapter, limits=limits, db=db_url)
    outside = tm.write_sentiment(tmp_path / "elsewhere.csv", 4)
    with pytest.raises(AccessDeniedError, match="not a file you uploaded"):
        access.enqueue_predict(outside, actor=ANN, adapter_id=adapter, limits=OPEN, db=db_url)
    with pytest.raises(AdapterError, match="was trained on"):
        access.enqueue_predict(
            upload, actor=LOCAL, adapter_id=adapter, model="gpt2", limits=OPEN, db=db_url
        )
    assert queue.list_jobs(db=db_url) == []


def test_nobody_else_sees_cancels_downloads_or_borrows(db_url, trained, upload):
    anns = _adapter(trained, db_url)
    job_id = access.enqueue_predict(upload, actor=ANN, adapter_id=anns, limits=OPEN, db=db_url)
    with pytest.raises(AccessDeniedError, match=f"No adapter #{anns} among yours"):
        access.enqueue_predict(upload, actor=BOB, adapter_id=anns, limits=OPEN, db=db_url)
    for call in (access.get_job, access.cancel_job, access.prediction_file):
        with pytest.raises(AccessDeniedError, match=f"No job #{job_id} among yours"):
            call(job_id, actor=BOB, db=db_url)
    assert access.list_jobs(BOB, db=db_url) == []
    with pytest.raises(AccessDeniedError, match="not signed in"):
        access.enqueue_predict(upload, actor=access.ANONYMOUS, adapter_id=anns, db=db_url)
    assert Worker(db_url, device="cpu").run_one()
    assert access.prediction_file(job_id, actor=ROOT, db=db_url).is_file()  # an admin may
    assert access.prediction_file(job_id, actor=ANN, db=db_url).is_file()
    with pytest.raises(AccessDeniedError):
        access.prediction_file(job_id, actor=BOB, db=db_url)


def test_a_crash_fails_the_prediction_plainly_and_the_worker_goes_on(db_url, trained, upload):
    adapter = _adapter(trained, db_url)
    first = access.enqueue_predict(upload, actor=ANN, adapter_id=adapter, limits=OPEN, db=db_url)
    second = access.enqueue_predict(upload, actor=ANN, adapter_id=adapter, limits=OPEN, db=db_url)
    calls = []

    def crash_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError(f"boom in {upload}")
        return predict_file(*args, **kwargs)

    worker = Worker(db_url, predict_fn=crash_once, device="cpu")
    assert worker.run_one() and worker.run_one()
    failed = queue.get_job(first, db=db_url)
    assert failed.status == "failed"
    assert failed.message.startswith("The prediction crashed with RuntimeError: boom in rows.csv")
    assert queue.get_job(second, db=db_url).status == "done"
