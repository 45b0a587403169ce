"""Attacks on password sign-in against a running studio: locking a real user out, guessing
across names, sessions that outlive their hours, a removed user or an old password, sign-out,
and a web page whose name resolves to the loopback studio.

The studio listens on 127.0.0.1; its uvicorn trusts X-Forwarded-For from there (as from a
proxy on the same host), so the tests speak from several client addresses.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time

import httpx
import pytest
from attack_support import PASSWORDS, running_studio

from app import access_mode, access_users, auth, sessions, sign_in

SESSION_HOURS = 0.004  # 14.4 s: long enough for each test, short enough to see one end


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sign-in")
    with running_studio(tmp, workers=0, IA3_SESSION_HOURS=str(SESSION_HOURS)) as attacked:
        yield attacked


def sign_in_from(studio, address: str | None, name: str, password: str) -> httpx.Response:
    headers = {"X-Forwarded-For": address} if address else {}
    return httpx.post(
        studio.url + "/login",
        data={"username": name, "password": password},
        headers=headers,
        timeout=30,
    )


def signed_in(http: httpx.Client) -> bool:
    """Whether the cookies `http` holds are a live session (Gradio's own check)."""
    return http.get("/gradio_api/login_check").status_code == 200


def test_a_strangers_wrong_passwords_do_not_lock_the_real_user_out(studio):
    stranger = "203.0.113.9"
    answers = [sign_in_from(studio, stranger, "ann", f"guess-{i}").status_code for i in range(11)]
    assert 200 not in answers and answers[-1] == 429  # the stranger's address is paused
    paused = sign_in_from(studio, stranger, "ann", PASSWORDS["ann"])
    assert paused.status_code == 429 and "try again in" in paused.text
    assert sign_in_from(studio, None, "ann", PASSWORDS["ann"]).status_code == 200
    assert sign_in_from(studio, "198.51.100.7", "ann", PASSWORDS["ann"]).status_code == 200


def test_guesses_sent_all_at_once_are_counted_before_they_are_checked(studio):
    async def flood() -> list[int]:
        headers = {"X-Forwarded-For": "203.0.113.11"}
        async with httpx.AsyncClient(base_url=studio.url, headers=headers, timeout=60) as http:
            tries = [
                http.post("/login", data={"username": "root", "password": f"guess-{i}"})
                for i in range(30)
            ]
            return [response.status_code for response in await asyncio.gather(*tries)]

    answers = asyncio.run(flood())
    # The first few are checked; pauses start at 1 s and double, so most are refused unchecked.
    assert answers.count(400) <= 2 * sign_in.FREE_PER_NAME and answers.count(429) >= 20, answers


def test_an_address_guessing_across_many_names_is_paused(studio):
    guesser = "203.0.113.10"
    for i in range(sign_in.FREE_PER_ADDRESS):
        assert sign_in_from(studio, guesser, f"user{i}", "password1").status_code == 400
    assert sign_in_from(studio, guesser, "bob", PASSWORDS["bob"]).status_code == 429
    assert sign_in_from(studio, "198.51.100.8", "bob", PASSWORDS["bob"]).status_code == 200


def test_the_table_of_failures_stays_bounded():
    throttle = sign_in.Throttle(max_entries=300)
    for i in range(5000):
        throttle.failed(f"10.{i // 250}.{i % 250}.1", f"name-{i}")
    assert len(throttle) <= 300
    assert sign_in.MAX_ENTRIES <= 100_000  # the studio's own table: a few MB at most


def test_many_failures_for_one_name_slow_it_down_but_never_refuse_a_new_address():
    throttle = sign_in.Throttle()
    for i in range(sign_in.NAME_SLOW_AFTER):
        throttle.failed(f"203.0.113.{i}", "ann")  # a botnet guessing ann's password
    assert throttle.delay_s("ann") == sign_in.NAME_DELAY_S and throttle.delay_s("bob") == 0
    assert throttle.pause_s("198.51.100.1", "ann") == 0


def test_one_user_signing_in_again_and_again_signs_nobody_else_out(tmp_path):
    users = tmp_path / "users.txt"
    for name in ("ann", "bob"):
        access_users.add_user(users, name, PASSWORDS[name])
    table = sessions.Sessions(users, hours=12, max_sessions=100)
    table["ann-token"] = "ann"
    for i in range(1000):
        table[f"bob-{i}"] = "bob"
    assert table.get("ann-token") == "ann"
    assert len(table) <= sessions.MAX_SESSIONS_PER_USER + 1 and table.get("bob-999") == "bob"


def test_password_checks_run_off_the_event_loop(tmp_path, monkeypatch):
    users = tmp_path / "users.txt"
    access_users.add_user(users, "ann", PASSWORDS["ann"])
    saved = auth.active()
    access_mode.configure(auth.settings_from_env("0.0.0.0", {"IA3_USERS": str(users)}))
    try:
        check = auth.mount_options(tmp_path)["auth"]
        threads = []
        real = sign_in.check_password
        monkeypatch.setattr(
            sign_in,
            "check_password",
            lambda *a: threads.append(threading.get_ident()) or real(*a),
        )
        answer = check("ann", PASSWORDS["ann"])
        assert inspect.isawaitable(answer)  # Gradio awaits it rather than blocking its loop
        assert asyncio.run(answer) is True
        assert threads and threading.get_ident() not in threads
    finally:
        access_mode.configure(saved)


def test_a_session_ends_after_the_configured_hours(studio):
    http = studio.http("ann")
    assert signed_in(http)
    time.sleep(SESSION_HOURS * 3600 + 1)
    assert not signed_in(http)
    assert http.get("/gradio_api/token").json()["user"] is None


def test_removing_a_user_ends_their_sessions_at_once(studio):
    http, client = studio.http("bob"), studio.client("bob")
    assert signed_in(http) and client.predict(api_name="/list_jobs") == []
    users = access_users.read_users(studio.users)
    access_users.write_users(studio.users, {k: v for k, v in users.items() if k != "bob"})
    try:
        assert not signed_in(http)
        with pytest.raises(Exception):  # noqa: B017 (gradio_client raises its own HTTP errors)
            client.predict(api_name="/list_jobs")
        assert sign_in_from(studio, None, "bob", PASSWORDS["bob"]).status_code == 400
    finally:
        access_users.write_users(studio.users, users)
    assert signed_in(studio.http("bob"))


def test_a_new_password_ends_the_sessions_signed_in_with_the_old_one(studio):
    http = studio.http("ann")
    assert signed_in(http)
    users = access_users.read_users(studio.users)
    access_users.add_user(studio.users, "ann", "a-new-password")
    try:
        assert not signed_in(http)
    finally:
        access_users.write_users(studio.users, users)


def test_sign_out_ends_the_session_on_the_server(studio):
    http = studio.http("ann")
    stolen = dict(http.cookies)
    assert http.get("/logout", follow_redirects=False).status_code == 302
    replay = httpx.Client(base_url=studio.url, cookies=stolen, timeout=30)
    assert not signed_in(replay)


def test_a_page_under_another_name_cannot_reach_the_loopback_studio(studio):
    # DNS rebinding: evil.example resolves to 127.0.0.1, so its page is "same origin".
    rebound = {"Host": "evil.example", "Origin": "http://evil.example"}
    response = httpx.post(
        studio.url + "/login",
        data={"username": "ann", "password": PASSWORDS["ann"]},
        headers=rebound,
        timeout=30,
    )
    assert response.status_code == 403 and "set-cookie" not in response.headers
    assert httpx.get(studio.url + "/config", headers={"Host": "evil.example"}).status_code == 403
    assert httpx.get(studio.url + "/", headers={"Host": "localhost"}).status_code == 200
