"""Compare runs on a running studio with sign-in: ann compares her two jobs; bob cannot compare
them (through the API or the Jobs tab's button), not even beside a job of his own, and his
refusal is the one a missing job gets, with nothing of hers in it; the ids are bounded.

One studio without a worker (the jobs stay queued: comparing reads only the database).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from attack_support import raw_call, refused, running_studio, ui_event
from gradio_client import handle_file

SECRET = "ANNS-SECRET-RUN"


def _reviews(path: Path) -> str:
    words = ["great", "fine", "lovely", "best", "awful", "poor", "bad", "worst"]
    rows = [f"the film was {words[i % 8]},{'pos' if i % 8 < 4 else 'neg'}" for i in range(40)]
    path.write_text("text,label\n" + "\n".join(rows) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare-owners")
    with running_studio(tmp, workers=0) as attacked:
        clients = {name: attacked.client(name) for name in ("ann", "bob", "root")}
        upload = handle_file(_reviews(tmp / f"{SECRET}.csv"))
        anns = [
            clients["ann"].predict(
                {"model": "minilm", "steps": steps, "name": f"{SECRET}-{steps}"},
                upload,
                None,
                api_name="/enqueue",
            )
            for steps in (5, 7)
        ]
        bobs = clients["bob"].predict(
            {"model": "minilm", "data": "sentiment", "steps": 5}, None, None, api_name="/enqueue"
        )
        yield {**clients, "anns": anns, "bobs": bobs, "bob_http": attacked.http("bob")}


def test_ann_compares_her_own_jobs(studio):
    found = studio["ann"].predict(studio["anns"], api_name="/compare_jobs")
    assert found["jobs"] == studio["anns"]
    rows = {row[0]: row[1:] for row in found["settings"]["rows"]}
    assert rows["steps"] == ["5", "7"] and rows["name"] == [f"{SECRET}-5", f"{SECRET}-7"]
    assert "/" not in json.dumps(found["settings"]).replace("/adapters/", "")  # no server path


def test_bob_gets_the_refusal_of_a_missing_job_and_nothing_of_hers(studio):
    bob, anns, bobs = studio["bob"], studio["anns"], studio["bobs"]
    missing = max(anns + [bobs]) + 1000
    for hers in anns:
        message = refused(bob, [bobs, hers], api_name="/compare_jobs")
        absent = refused(bob, [bobs, missing], api_name="/compare_jobs")
        assert message == absent.replace(f"#{missing}", f"#{hers}")
        assert f"No job #{hers} among yours" in message
        assert SECRET not in message and "ann" not in message
    message = refused(bob, anns, api_name="/compare_jobs")
    assert f"No job #{anns[0]} among yours" in message and SECRET not in message


def test_bob_cannot_compare_her_jobs_through_the_jobs_tab(studio):
    # Gradio itself refuses ids outside bob's own choices; the handler's check stands behind
    # it (the API above reaches it directly).
    answer = ui_event(studio["bob_http"], "compare-button", "click", [studio["anns"]])
    assert answer["success"] is False and "data" not in answer["output"]
    assert SECRET not in json.dumps(answer)


def test_an_admin_may_compare_anyones_jobs(studio):
    both = [studio["anns"][0], studio["bobs"]]
    assert studio["root"].predict(both, api_name="/compare_jobs")["jobs"] == both


def test_the_ids_are_bounded_and_checked(studio):
    http = studio["bob_http"]
    kind, message = raw_call(http, "/compare_jobs", ["1; DROP TABLE jobs", studio["bobs"]])
    assert kind == "error" and "is not a job number" in message
    kind, message = raw_call(http, "/compare_jobs", list(range(1, 10)))
    assert kind == "error" and "At most 8 jobs" in message
    kind, message = raw_call(http, "/compare_jobs", [studio["bobs"]])
    assert kind == "error" and "at least 2 different jobs" in message
