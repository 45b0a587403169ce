"""The studio's API keys section: the key shown once, the list, revoking; only for people who
may own things, and never someone else's key (SQLite and PostgreSQL)."""

from __future__ import annotations

from app import api_keys_view, auth
from app.main import build_studio
from jobs import access, api_keys
from jobs.access import ANONYMOUS, LOCAL

ANN, BOB = access.user("ann"), access.user("bob")


def _value(update):
    return update.get("value") if isinstance(update, dict) else getattr(update, "value", update)


def test_a_key_is_shown_once_listed_and_revoked(db_url):
    with auth.acting_as(ANN):
        rows, pick, note, secret = api_keys_view.create("notebook")
        key = secret.value
        assert secret.visible and key.startswith("ia3_") and "shown only this once" in note
        assert api_keys.resolve(key) == ANN
        assert [r[0] for r in rows] == ["notebook"] and rows[0][1].startswith(key[:13])
        assert key not in str(rows) and [c[1] for c in pick.choices]  # one live key to revoke
        rows, pick, note, secret = api_keys_view._listing()  # opening the tab again
        assert secret.value == "" and not secret.visible
        key_id = api_keys.list_keys(actor=ANN)[0].id
    with auth.acting_as(BOB):
        rows, _, note, _ = api_keys_view.revoke(key_id)
        assert rows == [] and f"No API key #{key_id} among yours" in note
        assert api_keys.resolve(key) == ANN
    with auth.acting_as(ANN):
        rows, pick, note, _ = api_keys_view.revoke(key_id)
        assert "revoked" in note and rows[0][4].startswith("revoked") and pick.choices == []
        assert api_keys.resolve(key) is None


def test_nobody_signed_in_sees_no_section_and_makes_no_key(db_url):
    with auth.acting_as(ANONYMOUS):
        assert api_keys_view._show_section().visible is False
        rows, _, note, secret = api_keys_view.create("sneaky")
        assert "not signed in" in note and not secret.visible
    with auth.acting_as(LOCAL):
        assert api_keys_view._show_section().visible is True
        _, _, _, secret = api_keys_view.create("mine")
        assert api_keys.resolve(secret.value) == LOCAL


def test_the_section_is_on_the_page_with_its_ids_and_no_public_endpoint(db_url):
    demo = build_studio()
    ids = {block.elem_id for block in demo.blocks.values()}
    assert {"apikey-name", "apikey-create", "apikey-secret", "apikey-table", "apikey-revoke"} <= ids
    public = {fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public"}
    assert not [name for name in public if "key" in name]
