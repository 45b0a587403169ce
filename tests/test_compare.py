"""Compare runs on SQLite and PostgreSQL: two tiny trainings' real events replayed into the queue
as ann's jobs, then compared: curves per run, the settings that differ (a preset's values, files
by name), final metrics beside the untuned start, adapter links, the bounds on the ids, the owner
check, predict jobs refused; the Jobs tab's block and the API endpoint in-process."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import pytest
import train_models as tm
from sqlalchemy import update

from app import api, compare, compare_view
from app.auth import acting_as
from app.main import build_studio
from app.messages import shown_as_error
from ia3engine import TrainSpec, train
from jobs import access, queue, registry
from jobs.compare import MAX_RUNS, compared_runs, job_ids_from
from jobs.db import writing
from jobs.errors import AccessDeniedError, JobError
from jobs.models import Job
from jobs.status import Status

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ANN, BOB = access.user("ann"), access.user("bob")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two real 4-step runs that differ in learning rate and name: (spec, events, folder)."""
    root = tmp_path_factory.mktemp("compare")
    model = tm.save_tiny("bert", root / "bert")
    data = tm.write_sentiment(root / "reviews.csv", 32)
    runs = []
    for name, lr in (("slow", 1e-3), ("fast", 3e-2)):
        events = []
        spec = TrainSpec(
            model=model,
            data=data,
            steps=4,
            batch_size=8,
            eval_every=2,
            val_fraction=0.25,  # 32 rows: the default would hold none back to evaluate
            lr=lr,
            device="cpu",
            name=name,
            out_dir=str(root / name),
        )
        train(spec, on_event=events.append)
        runs.append((spec, events, root / name))
    return runs


def _replayed(db, spec, events, folder, owner="ann") -> int:
    """A done job of `owner` whose worker reported `events` and registered `folder`."""
    job_id = queue.enqueue(spec, owner=owner, db=db)
    claimed = queue.claim_job("w1", db=db)
    assert claimed.id == job_id
    for event in events:
        assert queue.record_event(job_id, "w1", claimed.attempts, event, db=db)
    metrics = next(e["metrics"] for e in events if e["type"] == "finished")
    with writing(db) as conn:
        adapter = registry.register_files(
            conn,
            registry.read_folder(folder),
            name=spec.name,
            owner=owner,
            job_id=job_id,
            metrics=metrics,
        )
        assert queue.finish_job(conn, job_id, "w1", Status.DONE, "done", adapter_id=adapter)
    return job_id


@pytest.fixture
def anns(db_url, trained):
    return [_replayed(db_url, *run) for run in trained]


def test_each_runs_curves_are_series_of_one_plot_named_by_job(db_url, trained, anns):
    found = compare.compare_jobs(anns, ANN, db=db_url)
    assert found["jobs"] == anns
    for job_id, (_, events, _) in zip(anns, trained, strict=True):
        losses = [e["loss"] for e in events if e["type"] == "step" and e.get("loss") is not None]
        drawn = [p["value"] for p in found["curves"] if p["series"] == f"#{job_id} train loss"]
        assert drawn == pytest.approx(losses) and losses
        evals = [e for e in events if e["type"] == "eval"]
        accuracy = [p for p in found["curves"] if p["series"] == f"#{job_id} eval accuracy"]
        assert [p["step"] for p in accuracy] == [e["step"] for e in evals]
        assert [p["value"] for p in accuracy] == pytest.approx(
            [e["metrics"]["accuracy"] for e in evals]
        )
    assert {p["series"].split()[0] for p in found["curves"]} == {f"#{i}" for i in anns}


def test_settings_table_lists_only_what_differs(db_url, anns):
    settings = compare.compare_jobs(anns, ANN, db=db_url)["settings"]
    assert settings["headers"] == ["setting", f"#{anns[0]}", f"#{anns[1]}"]
    assert {row[0]: row[1:] for row in settings["rows"]} == {
        "lr": ["0.001", "0.03"],
        "name": ["slow", "fast"],
    }


def test_settings_show_a_presets_values_and_data_files_by_name(db_url, tmp_path):
    other = tmp_path / "elsewhere"
    other.mkdir()
    quick = TrainSpec(data=tm.write_sentiment(tmp_path / "a.csv", 8), name="x")
    tfew = TrainSpec(data=tm.write_sentiment(other / "b.csv", 8), preset="tfew", name="x")
    ids = [queue.enqueue(spec, owner="ann", db=db_url) for spec in (quick, tfew)]
    rows = {
        row[0]: row[1:] for row in compare.compare_jobs(ids, ANN, db=db_url)["settings"]["rows"]
    }
    assert rows["preset"] == ["quick", "tfew"]
    assert rows["optimizer"] == ["adamw", "adafactor"]  # resolved, though neither spec names it
    assert rows["steps"] == ["120", "1000"]
    assert rows["data"] == ["a.csv", "b.csv"]
    shown = json.dumps(rows)
    assert str(tmp_path) not in shown and "out_dir" not in rows


def test_metrics_table_has_final_and_before_tuning_values_and_links(db_url, trained, anns):
    found = compare.compare_jobs(anns, ANN, db=db_url)
    headers, rows = found["metrics"]["headers"], found["metrics"]["rows"]
    assert headers[:4] == ["job", "status", "steps", "adapter"]
    assert "accuracy before tuning" in headers
    for job_id, row, (_, events, folder) in zip(anns, rows, trained, strict=True):
        shown = dict(zip(headers, row, strict=True))
        job = queue.get_job(job_id, db=db_url)
        final = next(e["metrics"] for e in events if e["type"] == "finished")
        before = json.loads((Path(folder) / "training_info.json").read_text())["metrics_before"]
        assert shown["job"] == f"#{job_id}" and shown["status"] == "done"
        assert shown["adapter"] == f"#{job.adapter_id}" and shown["steps"] == "4/4"
        assert shown["accuracy"] == pytest.approx(final["accuracy"], abs=1e-4)
        assert shown["accuracy before tuning"] == pytest.approx(before["accuracy"], abs=1e-4)
    links = found["links"]
    assert [link["url"] for link in links] == [
        f"/adapters/{queue.get_job(i, db=db_url).adapter_id}" for i in anns
    ]
    assert "(/adapters/" in compare.links_markdown(links)


def test_before_tuning_comes_from_the_jobs_insights_when_they_hold_it(db_url, anns):
    with writing(db_url) as conn:
        insights = {"version": 1, "metrics_before": {"accuracy": 0.125}, "metrics": {}}
        conn.execute(update(Job).where(Job.id == anns[0]).values(insights=insights))
    table = compare.compare_jobs(anns, ANN, db=db_url)["metrics"]
    column = table["headers"].index("accuracy before tuning")
    assert table["rows"][0][column] == 0.125


def test_a_running_job_shows_its_last_evaluation_and_no_link(db_url, trained, anns):
    spec, events, _ = trained[1]
    running = queue.enqueue(spec, owner="ann", db=db_url)
    claimed = queue.claim_job("w2", db=db_url)
    first_eval = next(i for i, e in enumerate(events) if e["type"] == "eval" and e["step"] > 0)
    for event in events[: first_eval + 1]:
        assert queue.record_event(running, "w2", claimed.attempts, event, db=db_url)
    found = compare.compare_jobs([anns[0], running], ANN, db=db_url)
    shown = dict(zip(found["metrics"]["headers"], found["metrics"]["rows"][1], strict=True))
    assert shown["status"] == "running" and shown["adapter"] == "—"
    assert shown["accuracy"] == pytest.approx(events[first_eval]["metrics"]["accuracy"], abs=1e-4)
    assert found["links"][1]["url"] is None
    assert f"Job #{running}: no adapter" in compare.links_markdown(found["links"])


def test_repeats_count_once_and_text_ids_are_read(db_url, anns):
    assert job_ids_from([anns[0], anns[1], anns[0]]) == anns
    assert job_ids_from(f"{anns[0]}, #{anns[1]}") == anns
    assert [r.job.id for r in compared_runs([anns[1], anns[0], anns[1]], actor=ANN, db=db_url)] == [
        anns[1],
        anns[0],
    ]


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ([1], "at least 2 different jobs; 1 given"),
        ([1, 1], "at least 2 different jobs; 1 given"),
        (list(range(1, MAX_RUNS + 2)), f"At most {MAX_RUNS} jobs can be compared at once; 9 given"),
        (["three", 4], "'three' is not a job number"),
        ([True, 4], "True is not a job number"),
        ([-1, 4], "-1 is not a job number"),
        ([1.5, 4], "1.5 is not a job number"),
        ([2**40, 4], "is not a job number"),
        (None, "must be a list of job numbers"),
        ({"a": 1}, "must be a list of job numbers"),
    ],
)
def test_bad_ids_are_refused_naming_the_problem_and_the_fix(given, said):
    with pytest.raises(JobError) as refusal:
        job_ids_from(given)
    assert said in str(refusal.value)


def test_another_persons_job_is_refused_exactly_like_a_missing_one(db_url, trained, anns):
    bobs = queue.enqueue(trained[0][0], owner="bob", db=db_url)
    missing = bobs + 100
    with pytest.raises(AccessDeniedError) as hers:
        compare.compare_jobs([bobs, anns[0]], BOB, db=db_url)
    with pytest.raises(AccessDeniedError) as nothing:
        compare.compare_jobs([bobs, missing], BOB, db=db_url)
    assert str(hers.value) == str(nothing.value).replace(f"#{missing}", f"#{anns[0]}")
    assert "slow" not in str(hers.value) and "ann" not in str(hers.value)
    assert compare.compare_jobs(anns, access.LOCAL, db=db_url)["jobs"] == anns  # an admin may


def test_a_predict_job_is_refused_by_name(db_url, anns):
    predicting = queue.insert_job(
        {"model": "minilm", "data": "rows.csv"}, kind="predict", owner="ann", db=db_url
    )
    with pytest.raises(JobError, match=f"Job #{predicting} is a prediction, not a training run"):
        compare.compare_jobs([anns[0], predicting], ANN, db=db_url)


# The Jobs tab's block and the API, in-process -------------------------------------------------


def test_the_block_draws_one_plot_two_tables_and_links_for_the_signed_in_person(db_url, anns):
    with acting_as(ANN):
        note, plot, settings, metrics, links = compare_view.show(anns)
        dropdown, drawn = compare_view.refresh_choices()
        again, _ = compare_view.refresh_choices(drawn)
    choices = dropdown.choices
    assert note == ""
    assert set(plot["series"]) >= {f"#{anns[0]} train loss", f"#{anns[1]} eval accuracy"}
    assert list(settings.columns) == ["setting", f"#{anns[0]}", f"#{anns[1]}"]
    assert set(settings["setting"]) == {"lr", "name"}
    assert list(metrics["job"]) == [f"#{i}" for i in anns]
    assert links.count("](/adapters/") == 2
    assert {value for _, value in choices} == set(anns)
    assert again == gr.skip()  # unchanged choices are not redrawn


def test_the_block_shows_a_refusal_as_a_note_and_empty_results(db_url, anns):
    with acting_as(BOB):
        note, plot, settings, metrics, links = compare_view.show(anns)
        assert compare_view.refresh_choices()[0].choices == []
    assert f"No job #{anns[0]} among yours" in note and plot is None
    assert settings.empty and metrics.empty and links == ""
    with acting_as(ANN):
        note, *_ = compare_view.show([anns[0]])
    assert "at least 2 different jobs" in note


def test_the_choices_leave_out_predict_jobs():
    jobs = [
        {"id": 4, "status": "done", "kind": "predict", "spec": {"data": "/srv/rows.csv"}},
        {"id": 3, "status": "done", "kind": "train", "spec": {"data": "/srv/u/reviews.csv"}},
        {"id": 2, "status": "failed", "spec": {"name": "mine"}},
    ]
    assert compare_view.job_choices(jobs) == [
        ("#3 · done · reviews.csv", 3),
        ("#2 · failed · mine", 2),
    ]


def test_the_api_endpoint_compares_and_refuses_with_a_clear_message(db_url, anns):
    endpoint = shown_as_error(api.compare_jobs)
    with acting_as(ANN):
        assert endpoint(anns)["jobs"] == anns
    with acting_as(BOB), pytest.raises(gr.Error, match=f"No job #{anns[0]} among yours"):
        endpoint(anns)


def test_the_jobs_tab_has_the_compare_block_and_the_api_names_it():
    demo = build_studio()
    ids = {block.elem_id for block in demo.blocks.values() if getattr(block, "elem_id", None)}
    wanted = {"compare-jobs", "compare-button", "compare-plot", "compare-settings"}
    assert wanted | {"compare-metrics", "compare-links"} <= ids
    public = {fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public"}
    assert "compare_jobs" in public
