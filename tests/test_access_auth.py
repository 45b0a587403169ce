"""Access modes and sign-in: the studio refuses to listen beyond 127.0.0.1 without one, the
password file keeps only scrypt hashes, and each request is served as the user it carries."""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app import access_mode, access_users, auth, sign_in, web_guard
from ia3engine.errors import ConfigError
from jobs.access import ANONYMOUS, LOCAL

ROOT = Path(__file__).resolve().parents[1]
SPACE = {
    "SYSTEM": "spaces",
    "SPACE_ID": "team/ia3-studio",
    "OAUTH_CLIENT_ID": "id",
    "OAUTH_CLIENT_SECRET": "secret",
    "OAUTH_SCOPES": "openid profile",
    "OPENID_PROVIDER_URL": "https://huggingface.co",
}


@pytest.fixture
def users_file(tmp_path):
    path = tmp_path / "users.txt"
    access_users.add_user(path, "ann", "ann-password")
    access_users.add_user(path, "root", "root-password")
    return path


@pytest.fixture(autouse=True)
def restore_settings():
    saved = auth.active()
    yield
    access_mode.configure(saved)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "studio.example.org"])
def test_listening_beyond_loopback_without_an_access_mode_is_refused_naming_the_options(host):
    with pytest.raises(ConfigError) as refused:
        auth.settings_from_env(host, {})
    message = str(refused.value)
    assert f"will not listen on {host}" in message
    for option in ("hf_oauth: true", "ia3 users add", "IA3_USERS", "127.0.0.1"):
        assert option in message


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_needs_no_sign_in(host):
    assert auth.settings_from_env(host, {}).mode == "local"


def test_the_mode_follows_the_environment(users_file):
    password = auth.settings_from_env(
        "0.0.0.0", {"IA3_USERS": str(users_file), "IA3_ADMINS": "root, eve"}
    )
    assert password.mode == "password" and password.admins == {"root", "eve"}
    assert auth.settings_from_env("0.0.0.0", SPACE).mode == "oauth"
    both = auth.settings_from_env("0.0.0.0", {**SPACE, "IA3_USERS": str(users_file)})
    assert both.mode == "password"  # a password file wins, also on a Space
    with pytest.raises(ConfigError, match="not a mode"):
        auth.settings_from_env("127.0.0.1", {"IA3_ACCESS": "open"})


def test_a_missing_or_empty_password_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="holds no users"):
        auth.settings_from_env("0.0.0.0", {"IA3_USERS": str(tmp_path / "none.txt")})
    with pytest.raises(ConfigError, match="needs IA3_USERS"):
        auth.settings_from_env("0.0.0.0", {"IA3_ACCESS": "password"})


def test_oauth_off_a_space_is_refused_naming_what_is_missing():
    with pytest.raises(ConfigError, match="hf_oauth: true.*missing: SYSTEM=spaces, SPACE_ID"):
        auth.settings_from_env("0.0.0.0", {"IA3_ACCESS": "oauth"})


def test_studio_command_exits_with_the_refusal_before_starting_anything(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IA3_", "SPACE_", "OAUTH_"))}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.studio_cli",
            "--host",
            "0.0.0.0",
            "--port",
            "1",
            "--data-dir",
            str(tmp_path / "data"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "will not listen on 0.0.0.0" in result.stderr
    assert "Started" not in result.stdout  # no worker was started


def test_password_file_keeps_salted_scrypt_hashes_readable_by_its_owner_only(users_file):
    text = users_file.read_text()
    assert "ann-password" not in text
    users = access_users.read_users(users_file)
    assert users["ann"].startswith("scrypt$") and users["ann"] != users["root"]
    assert access_users.verify_password("ann-password", users["ann"])
    assert not access_users.verify_password("ann-passwore", users["ann"])
    assert not access_users.verify_password("ann-password", users["ann"][:-2] + "AA")
    assert users_file.stat().st_mode & 0o077 == 0


def test_users_command_adds_lists_and_removes(tmp_path, monkeypatch, capsys):
    path = str(tmp_path / "u.txt")
    monkeypatch.setattr(sys, "stdin", io.StringIO("a-long-password\n"))
    add = argparse.Namespace(users_action="add", name="bob", file=path, password_stdin=True)
    assert access_users.run_users(add) == 0
    assert access_users.run_users(argparse.Namespace(users_action="list", file=path)) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "bob"
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    assert access_users.run_users(add) == 2
    assert "too short" in capsys.readouterr().err
    bad = argparse.Namespace(users_action="add", name="../x", file=path, password_stdin=True)
    monkeypatch.setattr(sys, "stdin", io.StringIO("a-long-password\n"))
    assert access_users.run_users(bad) == 2
    remove = argparse.Namespace(users_action="remove", name="bob", file=path)
    assert access_users.run_users(remove) == 0
    assert access_users.read_users(path) == {}


def test_sign_in_checks_the_file(users_file):
    access_mode.configure(auth.settings_from_env("0.0.0.0", {"IA3_USERS": str(users_file)}))
    assert sign_in.check_password("ann", "ann-password")
    assert sign_in.check_password(" ann ", "ann-password")
    assert not sign_in.check_password("ann", "wrong")
    assert not sign_in.check_password("nobody", "ann-password")
    assert not sign_in.check_password("ann", "")


def test_a_user_added_while_the_studio_runs_can_sign_in(users_file):
    access_mode.configure(auth.settings_from_env("0.0.0.0", {"IA3_USERS": str(users_file)}))
    access_users.add_user(users_file, "cat", "cat-password")
    assert sign_in.check_password("cat", "cat-password")


class FakeRequest:
    """What gradio hands a handler: .username (password sign-in) or .request.scope (OAuth)."""

    def __init__(self, username=None, session=None):
        self.username = username
        self.request = argparse.Namespace(scope={"session": session or {}})


def test_each_request_is_served_as_the_user_it_carries(users_file, monkeypatch):
    access_mode.configure(
        auth.settings_from_env("0.0.0.0", {"IA3_USERS": str(users_file), "IA3_ADMINS": "root"})
    )
    request = FakeRequest("ann")
    monkeypatch.setattr(auth, "_gradio_request", lambda: request)
    assert auth.current_actor().name == "ann" and not auth.current_actor().admin
    request = FakeRequest("root")
    assert auth.current_actor().admin
    request = None
    assert auth.current_actor() == ANONYMOUS
    with auth.acting_as(LOCAL):
        assert auth.current_actor() == LOCAL


def test_oauth_user_comes_from_the_space_session_and_expires(monkeypatch):
    access_mode.configure(auth.settings_from_env("0.0.0.0", {**SPACE, "IA3_ALLOWED_USERS": "ann"}))
    info = {"userinfo": {"preferred_username": "ann"}, "expires_at": time.time() + 60}
    request = FakeRequest(session={"oauth_info": info})
    monkeypatch.setattr(auth, "_gradio_request", lambda: request)
    assert auth.current_actor().name == "ann"
    info["expires_at"] = time.time() - 1
    assert auth.current_actor() == ANONYMOUS
    other = {"userinfo": {"preferred_username": "mallory"}, "expires_at": time.time() + 60}
    request = FakeRequest(session={"oauth_info": other})
    assert auth.current_actor() == ANONYMOUS  # signed in to the Hub, but not on the list


def test_local_mode_serves_the_data_directory_and_shared_modes_never_do(users_file, tmp_path):
    access_mode.configure(auth.AccessSettings())
    assert auth.mount_options(tmp_path)["allowed_paths"] == [str(tmp_path)]
    access_mode.configure(
        auth.settings_from_env("0.0.0.0", {"IA3_USERS": str(users_file), "IA3_MAX_UPLOAD_MB": "2"})
    )
    options = auth.mount_options(tmp_path)
    assert options["allowed_paths"] == [] and options["blocked_paths"] == [str(tmp_path)]
    assert options["auth"] is sign_in.check_login
    assert options["max_file_size"] == 2 * 2**20


def test_cross_site_settings_come_from_the_environment():
    web = web_guard.settings_from_env(
        "0.0.0.0", {"IA3_ALLOWED_ORIGINS": "https://a.example, http://b.example:8080/"}
    )
    assert web.allowed_origins == {"https://a.example", "http://b.example:8080"}
    assert (web.same_site, web.secure_cookies) == ("lax", "auto")
    space = web_guard.settings_from_env("0.0.0.0", SPACE)  # shown inside huggingface.co
    assert (space.same_site, space.secure_cookies) == ("none", "always")
    assert space.frame_ancestors == ("https://huggingface.co",)
    for variable, bad in (
        ("IA3_ALLOWED_ORIGINS", "evil.example"),
        ("IA3_ALLOWED_ORIGINS", "https://a.example/x"),
        ("IA3_COOKIE_SAMESITE", "off"),
        ("IA3_SECURE_COOKIES", "yes"),
    ):
        with pytest.raises(ConfigError, match=variable):
            web_guard.settings_from_env("0.0.0.0", {variable: bad})


def test_session_hours_come_from_the_environment(users_file):
    env = {"IA3_USERS": str(users_file)}
    assert auth.settings_from_env("0.0.0.0", env).session_hours == 12
    assert (
        auth.settings_from_env("0.0.0.0", {**env, "IA3_SESSION_HOURS": "0.5"}).session_hours == 0.5
    )
    for bad in ("forever", "0", "-3"):
        with pytest.raises(ConfigError, match="IA3_SESSION_HOURS"):
            auth.settings_from_env("0.0.0.0", {**env, "IA3_SESSION_HOURS": bad})


@pytest.mark.parametrize(
    ("origin", "host", "same"),
    [
        ("https://studio.example", "studio.example", True),
        ("http://studio.example:8080", "studio.example:8080", True),
        ("http://studio.example:8080", "studio.example", False),
        ("https://studio.example.evil.example", "studio.example", False),
        ("http://127.0.0.1:7860", "127.0.0.1:7860", True),
        ("http://[::1]:7860", "[::1]:7860", True),
        ("null", "studio.example", False),
        ("file://", "studio.example", False),
    ],
)
def test_an_origin_is_the_studios_own_only_when_its_host_and_port_match(origin, host, same):
    assert web_guard.same_origin(origin, host) is same


def test_state_changes_are_judged_by_origin_then_referer_then_fetch_site():
    web = web_guard.WebSettings(listen_host="0.0.0.0")

    def reason(method, path="/gradio_api/upload", **headers):
        headers = {"host": "studio.example", **{k.replace("_", "-"): v for k, v in headers.items()}}
        return web_guard.cross_site_reason(method, path, headers, web)

    assert reason("POST", origin="null") and reason("GET", origin="https://evil.example")
    assert reason("POST", referer="https://evil.example/a")
    assert reason("GET", "/logout", sec_fetch_site="same-site")
    assert reason("POST", sec_fetch_site="cross-site")
    assert reason("POST") is None  # a script: no browser, no one else's cookies
    assert reason("GET", sec_fetch_site="cross-site") is None  # a link to the page
    assert reason("POST", referer="https://studio.example/", sec_fetch_site="same-origin") is None
