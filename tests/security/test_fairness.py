"""One person cannot fill the studio's event queue: past their share, their requests are refused
as they arrive, while another person's request is still taken. (Latency under a flood is a
benchmark, bench/fairness.py, not a test.)
"""

from __future__ import annotations

import pytest
from adapter_zips import minilm_adapter_zip
from attack_support import running_studio
from gradio_client import handle_file


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fair-studio")
    archive = minilm_adapter_zip(tmp)
    with running_studio(tmp, workers=0, IA3_MAX_EVENTS_PER_USER="1") as attacked:
        attacked.adapters = {
            name: attacked.client(name).predict(
                handle_file(str(archive)), "minilm", name, api_name="/import_adapter"
            )
            for name in ("ann", "bob")
        }
        yield attacked


def _text(studio, name: str) -> dict:
    return {"data": ["a warm and funny film", [studio.adapters[name]], True]}


def _answer(http, event) -> str:
    return http.get(f"/gradio_api/call/predict/{event.json()['event_id']}", timeout=120).text


def test_a_second_request_while_the_first_runs_is_refused_and_others_still_get_in(studio):
    ann, bob = studio.http("ann"), studio.http("bob")
    # The first prediction loads the base model: seconds during which ann's one event is held.
    first = ann.post("/gradio_api/call/predict", json=_text(studio, "ann"))
    assert first.status_code == 200, first.text
    flood = [ann.post("/gradio_api/call/predict", json=_text(studio, "ann")) for _ in range(5)]
    refused = [r for r in flood if r.status_code == 429]
    assert refused, [r.status_code for r in flood]
    assert "IA3_MAX_EVENTS_PER_USER=1" in refused[0].text and refused[0].headers["Retry-After"]
    mine = bob.post("/gradio_api/call/predict", json=_text(studio, "bob"))
    assert mine.status_code == 200, mine.text  # bob's first request is his own share
    assert "event: complete" in _answer(bob, mine)
    assert "event: complete" in _answer(ann, first)
    # Once her request is answered, ann is served again.
    again = ann.post("/gradio_api/call/predict", json=_text(studio, "ann"))
    assert again.status_code == 200 and "event: complete" in _answer(ann, again)
