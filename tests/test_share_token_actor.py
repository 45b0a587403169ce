"""A share token presented with an API key (jobs.access_shares.with_share): the key's owner
gets read-only use of that one adapter, never a write (delete, rename, share, unshare,
insights); malformed, guessed, revoked tokens and those of a deleted adapter lend nothing; an
admin stays an admin."""

from __future__ import annotations

import pytest
import train_models as tm

from jobs import access, access_shares, registry
from jobs.errors import AccessDeniedError

ANN, BOB = access.user("ann"), access.user("bob")


@pytest.fixture(scope="module")
def adapter_folder(tmp_path_factory):
    return tm.tiny_classifier(tmp_path_factory.mktemp("share-token"))[1]


@pytest.fixture
def shared(db_url, adapter_folder):
    lent = registry.register_adapter(adapter_folder, name="lent", owner="ann")
    kept = registry.register_adapter(adapter_folder, name="kept", owner="ann")
    return lent, kept, access_shares.share_adapter(lent, actor=ANN)


def test_the_token_lends_its_one_adapter_to_the_keys_owner(shared):
    lent, kept, token = shared
    bob = access_shares.with_share(BOB, token)
    assert bob == access.Actor("bob", shared_adapter=lent)
    assert access.get_adapter(lent, actor=bob).name == "lent"
    with pytest.raises(AccessDeniedError):
        access.get_adapter(kept, actor=bob)
    assert access.list_adapters(bob) == []  # his own: none; the lent one is not his
    admin = access.user("root", admins=["root"])
    assert access_shares.with_share(admin, token) is admin
    assert access_shares.with_share(access.LOCAL, token) is access.LOCAL


def test_the_lent_adapter_cannot_be_changed_through_the_token(shared):
    lent, _, token = shared
    bob = access_shares.with_share(BOB, token)
    writes = (
        lambda: access.delete_adapter(lent, actor=bob),
        lambda: access.rename_adapter(lent, "bob's now", actor=bob),
        lambda: access.adapter_insights(lent, actor=bob),
        lambda: access_shares.unshare_adapter(lent, actor=bob),
        lambda: access_shares.share_adapter(lent, actor=bob),
    )
    for write in writes:
        with pytest.raises(AccessDeniedError):
            write()
    assert registry.get_adapter(lent).name == "lent"
    assert access_shares.share_token(lent, actor=ANN) == token


def test_wrong_revoked_and_dead_tokens_lend_nothing(shared, adapter_folder):
    lent, _, token = shared
    guesses = [None, "", token[:-1], token + "A", "x" * 43, "a" * 101, token.upper(), "../" * 9]
    for guess in guesses:
        assert access_shares.lent_adapter(guess) is None
        assert access_shares.with_share(BOB, guess) is BOB
    access_shares.unshare_adapter(lent, actor=ANN)
    assert access_shares.lent_adapter(token) is None
    again = access_shares.share_adapter(lent, actor=ANN)
    assert again != token and access_shares.lent_adapter(again) == lent
    access.delete_adapter(lent, actor=ANN)
    assert access_shares.lent_adapter(again) is None
