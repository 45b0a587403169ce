"""API keys in the jobs layer (SQLite and PostgreSQL): shown once, stored hashed, listed and
revoked by their owner only, bounded per person, resolved to the person who made them."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

from jobs import access, api_keys
from jobs.access import ANONYMOUS, LOCAL
from jobs.db import get_engine
from jobs.errors import AccessDeniedError, LimitError

ANN, BOB = access.user("ann"), access.user("bob")


def test_a_key_is_shown_once_and_resolves_to_its_owner(db_url):
    info, key = api_keys.create_key("  my   script ", actor=ANN, db=db_url)
    assert key.startswith(f"ia3_{info.prefix}_") and len(key) > 50
    assert info.name == "my script" and info.live
    assert api_keys.resolve(key, db=db_url) == ANN
    assert api_keys.resolve(key, admins=["ann"], db=db_url).admin
    listed = api_keys.list_keys(actor=ANN, db=db_url)
    assert [(k.id, k.name, k.prefix) for k in listed] == [(info.id, "my script", info.prefix)]
    assert listed[0].last_used_at is not None  # the resolve above counted as a use
    assert not hasattr(listed[0], "secret_sha256")


def test_the_database_holds_no_key(db_url):
    _, key = api_keys.create_key("ci", actor=ANN, db=db_url)
    secret = key.rsplit("_", 1)[1]
    with get_engine(db_url).connect() as conn:
        row = conn.execute(text("SELECT * FROM api_keys")).one()
    assert all(secret not in str(value) and key not in str(value) for value in row)
    if db_url.startswith("sqlite"):
        path = db_url.removeprefix("sqlite:///")
        get_engine(db_url).dispose()  # the WAL is folded back into the file
        for suffix in ("", "-wal"):
            try:
                raw = open(path + suffix, "rb").read()
            except FileNotFoundError:
                continue
            assert secret.encode() not in raw and key.encode() not in raw


def test_wrong_unknown_and_revoked_keys_resolve_to_nobody(db_url):
    info, key = api_keys.create_key("ci", actor=ANN, db=db_url)
    for wrong in (
        None,
        "",
        "nonsense",
        key[:-1] + ("A" if key[-1] != "A" else "B"),
        key + "x",
        f"ia3_{info.prefix}_" + "a" * 43,
        "ia3_00000000_" + "a" * 43,
        key * 10,
    ):
        assert api_keys.resolve(wrong, db=db_url) is None
    api_keys.revoke_key(info.id, actor=ANN, db=db_url)
    assert api_keys.resolve(key, db=db_url) is None
    again = api_keys.revoke_key(info.id, actor=ANN, db=db_url)  # harmless twice
    assert not again.live and again.revoked_at is not None


def test_bob_can_neither_list_nor_revoke_anns_keys(db_url):
    info, key = api_keys.create_key("ann's", actor=ANN, db=db_url)
    bob_info, _ = api_keys.create_key("bob's", actor=BOB, db=db_url)
    assert [k.id for k in api_keys.list_keys(actor=BOB, db=db_url)] == [bob_info.id]
    refusals = []
    for key_id in (info.id, 99999):  # another's key and a missing one: the same words
        with pytest.raises(AccessDeniedError) as caught:
            api_keys.revoke_key(key_id, actor=BOB, db=db_url)
        refusals.append(str(caught.value).replace(str(key_id), "N"))
    assert refusals[0] == refusals[1]
    assert api_keys.resolve(key, db=db_url) == ANN  # untouched
    with pytest.raises(AccessDeniedError):
        api_keys.revoke_key("1; drop table", actor=BOB, db=db_url)


def test_nobody_signed_in_gets_no_keys_and_the_local_user_keeps_theirs(db_url):
    for call in (
        lambda: api_keys.create_key("x", actor=ANONYMOUS, db=db_url),
        lambda: api_keys.list_keys(actor=ANONYMOUS, db=db_url),
    ):
        with pytest.raises(AccessDeniedError, match="not signed in"):
            call()
    api_keys.create_key("ann's", actor=ANN, db=db_url)
    info, key = api_keys.create_key("local", actor=LOCAL, db=db_url)
    assert [k.id for k in api_keys.list_keys(actor=LOCAL, db=db_url)] == [info.id]
    assert api_keys.resolve(key, db=db_url) == LOCAL


def test_live_keys_per_person_are_bounded_and_names_checked(db_url, monkeypatch):
    monkeypatch.setenv("IA3_MAX_API_KEYS", "2")
    first, _ = api_keys.create_key("a", actor=ANN, db=db_url)
    api_keys.create_key("b", actor=ANN, db=db_url)
    with pytest.raises(LimitError, match="revoke one"):
        api_keys.create_key("c", actor=ANN, db=db_url)
    api_keys.create_key("bob", actor=BOB, db=db_url)  # bob's count is his own
    api_keys.revoke_key(first.id, actor=ANN, db=db_url)
    api_keys.create_key("c", actor=ANN, db=db_url)  # a revoked key frees its place
    for name in ("", "   ", "x" * 101):
        with pytest.raises(LimitError):
            api_keys.create_key(name, actor=BOB, db=db_url)


def test_the_bound_holds_when_keys_are_made_at_once(db_url, monkeypatch):
    monkeypatch.setenv("IA3_MAX_API_KEYS", "3")
    start, outcomes = threading.Barrier(8), []

    def make(i):
        start.wait()
        try:
            api_keys.create_key(f"k{i}", actor=ANN, db=db_url)
            outcomes.append("made")
        except LimitError:
            outcomes.append("refused")

    threads = [threading.Thread(target=make, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["made"] * 3 + ["refused"] * 5
    assert len(api_keys.list_keys(actor=ANN, db=db_url)) == 3
