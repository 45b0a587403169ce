"""Another web site against a signed-in user's browser: a studio reached as studio.example
(listening on 0.0.0.0) must not let evil.example read its session token, sign someone in or
out, or act for them; the studio's own pages and an allow-listed site keep working.

Requests carry the headers a browser would send (Host, Origin, Sec-Fetch-Site, Referer) over
raw HTTP; the session cookie is ann's, as her browser would attach it.
"""

from __future__ import annotations

import httpx
import pytest
from attack_support import PASSWORDS, running_studio

HOST = "studio.example"
OWN = f"https://{HOST}"
EVIL = "https://evil.example"
TOOLS = "https://tools.example"  # in IA3_ALLOWED_ORIGINS
SPEC = {"model": "minilm", "data": "sentiment", "steps": 5, "eval_every": 0}


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cross-site")
    with running_studio(tmp, workers=0, host="0.0.0.0", IA3_ALLOWED_ORIGINS=TOOLS) as attacked:
        yield attacked


def browser(studio, name: str | None = "ann", origin: str | None = OWN) -> httpx.Client:
    """A client that talks as a browser on `origin` does to the studio at studio.example;
    signed in as `name` through the studio's own sign-in form."""
    headers = {"Host": HOST}
    http = httpx.Client(base_url=studio.url, timeout=30, headers=headers)
    if name:
        response = http.post(
            "/login", data={"username": name, "password": PASSWORDS[name]}, headers={"Origin": OWN}
        )
        assert response.status_code == 200, response.text
    if origin:
        http.headers["Origin"] = origin
    return http


def jobs_of(studio, name: str = "ann") -> list:
    """The jobs `name` sees, asked through gradio_client."""
    return studio.client(name).predict(api_name="/list_jobs")


def allows(response: httpx.Response, origin: str) -> bool:
    """Whether a browser would hand `response` to a script running on `origin`."""
    return response.headers.get("access-control-allow-origin") in (origin, "*")


def test_another_site_cannot_read_a_signed_in_users_session_token(studio):
    http = browser(studio, origin=EVIL)
    token = http.get("/gradio_api/token")
    assert not allows(token, EVIL)
    assert "ann" not in token.text
    preflight = http.options("/gradio_api/token", headers={"Access-Control-Request-Method": "GET"})
    assert not allows(preflight, EVIL)
    assert preflight.headers.get("access-control-allow-credentials") != "true"


def test_another_site_cannot_read_the_studios_answers(studio):
    http = browser(studio, origin=EVIL)
    for path in ("/config", "/gradio_api/info", "/gradio_api/user"):
        response = http.get(path)
        assert not allows(response, EVIL), path
        assert response.status_code == 403, path


def test_sign_in_from_another_site_is_refused(studio):
    # Login CSRF: a form on evil.example signing the victim in as the attacker.
    http = browser(studio, name=None, origin=EVIL)
    response = http.post("/login", data={"username": "bob", "password": PASSWORDS["bob"]})
    assert response.status_code == 403
    assert "set-cookie" not in response.headers
    assert "another web site" in response.text


def test_a_job_queued_from_another_site_is_refused_and_nothing_is_queued(studio):
    http = browser(studio, origin=EVIL)
    before = len(jobs_of(studio))
    response = http.post("/gradio_api/call/enqueue", json={"data": [SPEC, None, None]})
    assert response.status_code == 403
    joined = http.post(
        "/gradio_api/queue/join",
        json={"data": [SPEC, None, None], "fn_index": 0, "session_hash": "evil"},
    )
    assert joined.status_code == 403
    assert len(jobs_of(studio)) == before


def test_state_changes_without_origin_are_judged_by_fetch_site_and_referer(studio):
    http = browser(studio, origin=None)
    before = len(jobs_of(studio))
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Referer": EVIL + "/page.html"}):
        response = http.post(
            "/gradio_api/call/enqueue", json={"data": [SPEC, None, None]}, headers=headers
        )
        assert response.status_code == 403, headers
    upload = http.post(
        "/gradio_api/upload",
        files={"files": ("x.csv", b"text,label\na,b\n")},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert upload.status_code == 403
    assert len(jobs_of(studio)) == before


def test_sign_out_from_another_site_is_refused(studio):
    # An <img src=/logout> on another site would sign the user out.
    http = browser(studio, origin=None)
    response = http.get("/logout", headers={"Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 403
    assert http.get("/gradio_api/login_check").status_code == 200  # still signed in


def test_the_studios_own_pages_and_scripts_keep_working(studio):
    own = browser(studio, origin=OWN)
    assert own.get("/gradio_api/token").json()["user"] == "ann"
    job = own.post("/gradio_api/call/enqueue", json={"data": [SPEC, None, None]})
    assert job.status_code == 200, job.text
    proxied = studio.http("ann", headers={"X-Forwarded-Host": HOST, "Origin": OWN})
    assert proxied.get("/gradio_api/token").json()["user"] == "ann"  # Host rewritten by a proxy
    script = studio.http("ann")  # gradio_client and scripts send no Origin at all
    assert script.get("/gradio_api/login_check").status_code == 200
    assert studio.client("bob").predict(api_name="/list_jobs") == []
    assert own.get("/logout", follow_redirects=False).status_code == 302  # the page's link


def test_an_allow_listed_origin_may_use_the_studio(studio):
    http = browser(studio, origin=TOOLS)
    token = http.get("/gradio_api/token")
    assert allows(token, TOOLS) and token.json()["user"] == "ann"
    assert token.headers.get("access-control-allow-credentials") == "true"
    preflight = http.options(
        "/gradio_api/call/list_jobs", headers={"Access-Control-Request-Method": "POST"}
    )
    assert allows(preflight, TOOLS)


def cookie_flags(response: httpx.Response) -> dict[str, set[str]]:
    """Session cookie name -> its attributes, lower-cased ('samesite=lax', 'secure', ...)."""
    flags = {}
    for header in response.headers.get_list("set-cookie"):
        name, *attributes = [part.strip().lower() for part in header.split(";")]
        flags[name.split("=")[0]] = set(attributes)
    return {name: attrs for name, attrs in flags.items() if name.startswith("access-token")}


def test_session_cookies_are_http_only_same_site_lax_and_secure_over_https(studio):
    form = {"username": "ann", "password": PASSWORDS["ann"]}
    plain = httpx.post(studio.url + "/login", data=form, timeout=30)
    proxied = httpx.post(
        studio.url + "/login", data=form, headers={"X-Forwarded-Proto": "https"}, timeout=30
    )  # an https proxy on the same host is trusted
    for response, secure in ((plain, False), (proxied, True)):
        cookies = cookie_flags(response)
        assert cookies, response.headers
        for name, attributes in cookies.items():
            assert "httponly" in attributes, name
            assert "samesite=lax" in attributes, (name, attributes)
            if secure:
                assert "secure" in attributes, name


def test_other_sites_cannot_frame_the_studio(studio):
    # Clickjacking: the studio shown invisibly inside evil.example's page.
    page = httpx.get(studio.url + "/", headers={"Host": HOST}, timeout=30)
    policy = page.headers.get("content-security-policy", "")
    assert "frame-ancestors 'self' " + TOOLS in policy
    assert page.headers.get("x-content-type-options") == "nosniff"
