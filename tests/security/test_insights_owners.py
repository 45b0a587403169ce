"""Validation insights on a running studio with sign-in: ann trains an adapter and reads its
insights (API and the Jobs tab's block, whose confusion matrices only she may fetch); bob gets
the refusal of a missing job from the API, nothing from either tab's block, 404 for her
pictures. One studio with one worker, the bundled MiniLM."""

from __future__ import annotations

import json
import re
import secrets

import pytest
from attack_support import PASSWORDS, job_done, refused, review_csv, running_studio
from gradio_client import handle_file
from waiting import wait_for

from app.adapters_tab import ALL

PRIVATE = "ANNS-PRIVATE-REVIEW"


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("insights-owners")
    with running_studio(tmp) as attacked:
        clients = {name: attacked.client(name) for name in PASSWORDS}
        ann = clients["ann"]
        # a validation share: on a few rows the default holds none back, and insights need some
        spec = {"model": "minilm", "steps": 5, "eval_every": 0, "name": "ann-insights"}
        spec["val_fraction"] = 0.25
        job = ann.predict(
            spec,
            handle_file(review_csv(tmp / "reviews.csv", ("pos", "neg"), f" {PRIVATE}")),
            None,
            api_name="/enqueue",
        )
        status = wait_for(lambda: job_done(ann, job), 240, "ann's 5-step job", poll_s=1)
        yield {
            **clients,
            "job": job,
            "adapter": status["adapter_id"],
            "ann_http": attacked.http("ann"),
            "bob_http": attacked.http("bob"),
        }


def _page_events(http, *steps) -> list:
    """Fire events of the page one after another in one session, as the browser does; each
    step (inputs' elem_ids, an output's elem_id, data) picks the listener that takes those
    inputs and draws that output. Returns each step's process_completed message."""
    config = http.get("/config").json()
    ids = {c.get("props", {}).get("elem_id"): c["id"] for c in config["components"]}
    session, answers = secrets.token_hex(8), []
    for inputs, output, data in steps:
        dep = next(
            d
            for d in config["dependencies"]
            if ids[output] in d["outputs"]
            and [ids[i] for i in inputs] == d["inputs"][: len(inputs)]
        )
        body = {"data": data, "fn_index": dep["id"], "session_hash": session}
        assert http.post("/gradio_api/queue/join", json=body).status_code == 200
        answers.append(_completed(http, session))
    return answers


def _completed(http, session: str) -> dict:
    with http.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as stream:
        for line in stream.iter_lines():
            if line.startswith("data: ") and '"process_completed"' in line:
                return json.loads(line.removeprefix("data: "))
    raise AssertionError("no answer from the page")


def _insights_of(http, job: int) -> dict:
    """The Jobs tab as a fresh page: its refresh (which fills the job list), then the
    insights block for `job` picked in the job dropdown."""
    refresh, insights = _page_events(
        http,
        (["job-select"], "jobs-table", [None, None]),
        (["job-select"], "insights", [job, None]),
    )
    assert refresh["success"], refresh
    return insights


def _visible(update) -> bool | None:
    return update.get("visible") if isinstance(update, dict) else None


def test_ann_reads_her_insights_before_and_after(studio):
    seen = studio["ann"].predict(studio["job"], api_name="/job_insights")
    assert seen["task"] == "classify" and seen["labels"] == ["neg", "pos"]
    assert seen["rows"] > 0 and set(seen) >= {"before", "after", "version"}
    for side in ("before", "after"):
        assert sum(map(sum, seen[side]["confusion"])) == seen["rows"]
    assert seen == studio["root"].predict(studio["job"], api_name="/job_insights")  # an admin


def test_bob_gets_the_refusal_of_a_missing_job(studio):
    job = studio["job"]
    theirs = refused(studio["bob"], job, api_name="/job_insights")
    missing = refused(studio["bob"], job + 1000, api_name="/job_insights")
    assert f"No job #{job} among yours" in theirs
    assert re.sub(r"#\d+", "#N", theirs) == re.sub(r"#\d+", "#N", missing)
    assert PRIVATE not in theirs


def test_the_jobs_tab_block_shows_ann_her_pictures_and_bob_nothing(studio):
    job = studio["job"]
    mine = _insights_of(studio["ann_http"], job)
    assert mine["success"], mine
    parts = mine["output"]["data"]
    assert _visible(parts[0]) is True
    pictures = [part["value"]["url"] for part in parts[2:4]]
    assert len(pictures) == 2
    for url in pictures:
        path = url[url.index("/gradio_api/file=") :]
        answer = studio["ann_http"].get(path)
        assert answer.status_code == 200 and answer.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert studio["bob_http"].get(path).status_code == 404
    # bob's page does not list ann's job, but the job dropdown takes a value its choices lack
    # (a refresh may land after a jump to a new job): picking hers draws nothing of hers,
    # because the block asks jobs.access, which refuses him as for a missing job
    theirs = _insights_of(studio["bob_http"], job)
    assert theirs["success"], theirs
    assert _visible(theirs["output"]["data"][0]) is False
    assert PRIVATE not in json.dumps(theirs) and "/gradio_api/file=" not in json.dumps(theirs)


def _adapter_insights_of(http, adapter: int) -> dict:
    """The Adapters tab as a fresh page: its listing (which fills the adapter list), then the
    insights block for `adapter` picked in the adapter dropdown."""
    filters = ["adapter-search", "adapter-base", "adapter-task", "adapter-select"]
    listing, insights = _page_events(
        http,
        (filters, "adapters-table", ["", ALL, ALL, None]),
        (["adapter-select"], "adapter-insights", [adapter]),
    )
    assert listing["success"], listing
    return insights


def test_the_adapters_tab_block_shows_ann_her_insights_and_bob_nothing(studio):
    adapter = studio["adapter"]
    mine = _adapter_insights_of(studio["ann_http"], adapter)
    assert mine["success"], mine
    parts = mine["output"]["data"]
    assert _visible(parts[0]) is True and parts[2]["value"]["url"]
    theirs = _adapter_insights_of(studio["bob_http"], adapter)
    assert not theirs["success"]  # not among his adapters' choices
    assert PRIVATE not in json.dumps(theirs) and "confusion" not in json.dumps(theirs)
