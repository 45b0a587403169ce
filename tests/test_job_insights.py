"""Validation insights through the queue, on SQLite and PostgreSQL: the worker stores what a
real training run measured in jobs.insights; JobInfo only flags it; jobs.access hands it to
the job's owner (or an admin) and refuses everyone else as it refuses a missing job."""

from __future__ import annotations

import pytest
from jobs_support import small_spec

from ia3engine.training.insights import SCHEMA_VERSION
from jobs import access, queue
from jobs.db import writing
from jobs.errors import AccessDeniedError
from jobs.status import Status
from jobs.worker import Worker

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _spec(base, data):
    # a validation share: on a few rows the default holds none back, and insights need some
    return small_spec(base, data, steps=4, eval_every=2, val_fraction=0.25)


def test_the_worker_stores_insights_before_and_after_on_the_job(db_url, tiny_bert, reviews):
    job_id = queue.enqueue(_spec(tiny_bert, reviews), owner="ann", db=db_url)
    assert not queue.get_job(job_id, db=db_url).has_insights
    assert queue.job_insights(job_id, db=db_url) is None
    assert Worker(db_url, step_event_s=0).run_one()
    job = queue.get_job(job_id, db=db_url)
    assert job.status == Status.DONE, job.message
    assert job.has_insights
    assert [j.has_insights for j in queue.list_jobs(db=db_url)] == [True]
    seen = queue.job_insights(job_id, db=db_url)
    assert seen["version"] == SCHEMA_VERSION and seen["task"] == "classify"
    assert seen["labels"] == ["neg", "pos"]
    for side in ("before", "after"):
        counts = seen[side]["confusion"]
        assert sum(map(sum, counts)) == seen["rows"] == seen["rows_total"] > 0
        assert [r["label"] for r in seen[side]["per_class"]] == ["neg", "pos"]
        assert len(seen[side]["wrong"]) == seen[side]["wrong_total"]
    # the stored "after" is the run's final score
    events = queue.job_events(job_id, db=db_url)
    final = [e.data["metrics"] for e in events if e.type == "eval" and not e.data.get("before")]
    assert seen["after"]["accuracy"] == pytest.approx(final[-1]["accuracy"])


def test_a_cancelled_run_stores_no_insights(db_url, tiny_bert, reviews):
    job_id = queue.enqueue(_spec(tiny_bert, reviews), owner="ann", db=db_url)
    queue.cancel_job(job_id, db=db_url)  # cancelled while queued: never trained
    job = queue.get_job(job_id, db=db_url)
    assert job.status == Status.CANCELLED and not job.has_insights
    assert queue.job_insights(job_id, db=db_url) is None


def test_only_the_owner_or_an_admin_reads_a_jobs_insights(db_url, tiny_bert, reviews):
    job_id = queue.enqueue(_spec(tiny_bert, reviews), owner="ann", db=db_url)
    assert Worker(db_url, step_event_s=0).run_one()
    ann, bob = access.user("ann"), access.user("bob")
    mine = access.job_insights(job_id, actor=ann, db=db_url)
    assert mine == queue.job_insights(job_id, db=db_url)
    assert access.job_insights(job_id, actor=access.LOCAL, db=db_url) == mine
    with pytest.raises(AccessDeniedError) as theirs:
        access.job_insights(job_id, actor=bob, db=db_url)
    with pytest.raises(AccessDeniedError) as missing:
        access.job_insights(job_id + 1000, actor=bob, db=db_url)
    assert str(theirs.value) == str(missing.value).replace(str(job_id + 1000), str(job_id))
    with pytest.raises(AccessDeniedError):
        access.job_insights(job_id, actor=access.ANONYMOUS, db=db_url)


def test_an_adapters_insights_are_its_jobs_and_only_for_its_owner(db_url, tiny_bert, reviews):
    job_id = queue.enqueue(_spec(tiny_bert, reviews), owner="ann", db=db_url)
    assert Worker(db_url, step_event_s=0).run_one()
    adapter_id = queue.get_job(job_id, db=db_url).adapter_id
    ann = access.user("ann")
    seen = access.adapter_insights(adapter_id, actor=ann, db=db_url)
    assert seen == queue.job_insights(job_id, db=db_url) and seen is not None
    visitor = access.Actor(None, shared_adapter=adapter_id)  # a share link opens the adapter
    assert access.get_adapter(adapter_id, actor=visitor, db=db_url).id == adapter_id
    for stranger in (access.user("bob"), visitor):
        with pytest.raises(AccessDeniedError) as theirs:
            access.adapter_insights(adapter_id, actor=stranger, db=db_url)
        assert f"No adapter #{adapter_id} among yours" in str(theirs.value)


def test_a_diverged_runs_nan_is_stored_as_null_not_refused(db_url, tiny_bert, reviews):
    job_id = queue.enqueue(_spec(tiny_bert, reviews), db=db_url)
    assert queue.claim_job("w1", db=db_url).id == job_id
    seen = {"version": 1, "after": {"accuracy": float("nan"), "wrong": [{"confidence": 0.5}]}}
    with writing(db_url) as conn:
        assert queue.finish_job(conn, job_id, "w1", Status.DONE, insights=seen, attempt=1)
    stored = queue.job_insights(job_id, db=db_url)
    assert stored["after"] == {"accuracy": None, "wrong": [{"confidence": 0.5}]}
    assert queue.get_job(job_id, db=db_url).has_insights
