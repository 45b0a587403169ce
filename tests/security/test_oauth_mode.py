"""Hugging Face sign-in (a Space with hf_oauth: true), attacked offline: the Space's OAuth
variables are set by hand and sessions are signed as gradio signs them after a Hub login, so
the studio believes ann signed in; huggingface.co itself is never reached.

The studio listens on 0.0.0.0 and is reached as ia3.hf.space; another site's page in ann's
browser must not act for her, read her work or sign her out, and sessions it did not make
(forged, unsigned, without an end) are nobody.
"""

from __future__ import annotations

import json
import time
from base64 import b64encode

import httpx
import pytest
import studio_support
from attack_support import running_studio
from gradio_client import Client
from gradio_client.exceptions import AppError

SPACE = {**studio_support.SPACE, "IA3_ACCESS": "oauth"}
HOST = "ia3.hf.space"
OWN = f"https://{HOST}"
EVIL = "https://evil.example"
SPEC = {"model": "minilm", "data": "sentiment", "steps": 5, "eval_every": 0}


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("oauth-space")
    with running_studio(tmp, workers=0, host="0.0.0.0", **SPACE) as attacked:
        yield attacked


def client(space, cookie: str | None) -> Client:
    return Client(
        space.url, headers={"Cookie": f"session={cookie}"} if cookie else {}, verbose=False
    )


def browser(space, origin: str | None, **headers) -> httpx.Client:
    """ann's browser with her Hub session, on a page of `origin`."""
    headers = {"Host": HOST, **({"Origin": origin} if origin else {}), **headers}
    return httpx.Client(
        base_url=space.url,
        headers=headers,
        cookies={"session": studio_support.hub_session("ann")},
        timeout=30,
    )


def test_another_site_cannot_queue_a_job_as_the_hub_user(space):
    ann = client(space, studio_support.hub_session("ann"))
    before = len(ann.predict(api_name="/list_jobs"))
    evil = browser(space, EVIL)
    response = evil.post("/gradio_api/call/enqueue", json={"data": [SPEC, None, None]})
    assert response.status_code == 403
    no_origin = browser(space, None, **{"Sec-Fetch-Site": "cross-site"})
    response = no_origin.post("/gradio_api/call/enqueue", json={"data": [SPEC, None, None]})
    assert response.status_code == 403
    assert len(ann.predict(api_name="/list_jobs")) == before
    own = browser(space, OWN).post("/gradio_api/call/enqueue", json={"data": [SPEC, None, None]})
    assert own.status_code == 200  # the Space's own page still can


def test_another_site_cannot_read_the_studio_as_the_hub_user(space):
    evil = browser(space, EVIL)
    for path in ("/config", "/gradio_api/info"):
        response = evil.get(path)
        assert response.headers.get("access-control-allow-origin") != EVIL, path
        assert response.status_code == 403, path


def test_another_site_cannot_sign_the_hub_user_out(space):
    evil = browser(space, None, **{"Sec-Fetch-Site": "cross-site"})
    response = evil.get("/logout", follow_redirects=False)
    assert response.status_code == 403
    assert "set-cookie" not in response.headers


def test_sessions_the_space_did_not_make_are_nobody(space):
    info = {"userinfo": {"preferred_username": "ann"}, "expires_at": time.time() + 3600}
    unsigned = b64encode(json.dumps({"oauth_info": info}).encode())
    strangers = [
        studio_support.hub_session("ann", secret="guessed-secret"),  # signed with the wrong key
        unsigned.decode(),  # not signed at all
        studio_support.hub_session("ann", expires_in=None),  # a session that never ends
        studio_support.hub_session("ann", expires_in=-60),  # one that has ended
    ]
    for cookie in strangers:
        stranger = client(space, cookie)
        with pytest.raises(AppError, match="not signed in"):
            stranger.predict(SPEC, None, None, api_name="/enqueue")


def test_the_space_cannot_be_framed_by_other_sites(space):
    page = httpx.get(space.url + "/", headers={"Host": HOST}, timeout=30)
    policy = page.headers.get("content-security-policy", "")
    assert policy == "frame-ancestors 'self' https://huggingface.co"  # the Space's own embed
