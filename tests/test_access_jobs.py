"""Owners in the jobs layer (SQLite and PostgreSQL): a user sees, cancels, downloads and deletes
only their own jobs and adapters, an admin sees all, share links open one adapter read-only,
and the host's limits refuse with a message instead of crashing."""

from __future__ import annotations

import json

import jobs_support
import pytest
import tiny_models

from ia3engine import IA3Config, get_ia3_model
from ia3engine.errors import ConfigError
from jobs import access, access_limits, access_shares, queue, registry
from jobs.access import LOCAL, Actor
from jobs.access_limits import EXAMPLES, Limits
from jobs.errors import AccessDeniedError, LimitError

ANN, BOB = access.user("ann"), access.user("bob")
ROOT = access.user("root", admins=["root"])
OPEN = access_limits.NO_LIMITS


@pytest.fixture
def upload(tmp_path, monkeypatch):
    """A training CSV inside the data directory's uploads (where the studio keeps uploads)."""
    folder = tmp_path / "data" / "uploads" / "abc"
    folder.mkdir(parents=True)
    return jobs_support.write_reviews(folder / "reviews.csv")


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("adapter")
    model = get_ia3_model(tiny_models.bert(), IA3Config(task_type="SEQ_CLS"))
    model.save_pretrained(folder)
    (folder / "training_info.json").write_text(json.dumps({"task": "classify"}))
    return folder


def _spec(data, **fields):
    return {"model": "minilm", "data": data, "steps": 10, **fields}


def test_a_user_sees_and_cancels_only_their_own_jobs(db_url, upload):
    mine = access.enqueue(_spec(upload), actor=ANN, limits=OPEN, db=db_url)
    theirs = access.enqueue(_spec(upload), actor=BOB, limits=OPEN, db=db_url)
    assert [j.id for j in access.list_jobs(ANN, db=db_url)] == [mine]
    assert access.get_job(mine, actor=ANN, db=db_url).owner == "ann"
    for call in (access.get_job, access.job_events, access.cancel_job, access.retry_job):
        with pytest.raises(AccessDeniedError, match=f"No job #{theirs} among yours"):
            call(theirs, actor=ANN, db=db_url)
    assert queue.get_job(theirs, db=db_url).status == "queued"  # untouched by ann's attempt
    assert {j.id for j in access.list_jobs(ROOT, db=db_url)} == {mine, theirs}
    assert access.cancel_job(theirs, actor=ROOT, db=db_url).status == "cancelled"


def test_a_missing_job_and_someone_elses_job_get_the_same_refusal(db_url, upload):
    theirs = access.enqueue(_spec(upload), actor=BOB, limits=OPEN, db=db_url)
    with pytest.raises(AccessDeniedError) as other:
        access.get_job(theirs, actor=ANN, db=db_url)
    with pytest.raises(AccessDeniedError) as missing:
        access.get_job(theirs + 1000, actor=ANN, db=db_url)
    assert str(other.value).replace(str(theirs), "N") == str(missing.value).replace(
        str(theirs + 1000), "N"
    )


def test_nobody_signed_in_sees_nothing_and_can_queue_nothing(db_url, upload):
    access.enqueue(_spec(upload), actor=ANN, limits=OPEN, db=db_url)
    assert access.list_jobs(access.ANONYMOUS, db=db_url) == []
    assert access.list_adapters(access.ANONYMOUS, db=db_url) == []
    with pytest.raises(AccessDeniedError, match="not signed in"):
        access.enqueue(_spec(upload), actor=access.ANONYMOUS, limits=OPEN, db=db_url)


def test_adapters_are_private_to_their_owner_and_admins(db_url, adapter_dir):
    mine = registry.register_adapter(adapter_dir, name="mine", owner="ann", db=db_url)
    theirs = registry.register_adapter(adapter_dir, name="theirs", owner="bob", db=db_url)
    assert [a.id for a in access.list_adapters(ANN, db=db_url)] == [mine]
    calls = [
        lambda i: access.get_adapter(i, actor=ANN, db=db_url),
        lambda i: access.adapter_folder(i, actor=ANN, db=db_url),
        lambda i: access.package_zip(i, actor=ANN, db=db_url),
        lambda i: access.rename_adapter(i, "stolen", actor=ANN, db=db_url),
        lambda i: access.delete_adapter(i, actor=ANN, db=db_url),
        lambda i: access_shares.share_adapter(i, actor=ANN, db=db_url),
    ]
    for call in calls:
        with pytest.raises(AccessDeniedError, match=f"No adapter #{theirs} among yours"):
            call(theirs)
    assert registry.get_adapter(theirs, db=db_url).name == "theirs"  # neither renamed nor deleted
    assert {a.id for a in access.list_adapters(ROOT, db=db_url)} == {mine, theirs}
    access.delete_adapter(theirs, actor=ROOT, db=db_url)
    assert [a.id for a in access.list_adapters(ROOT, db=db_url)] == [mine]


def test_share_link_opens_one_adapter_read_only_until_sharing_stops(db_url, adapter_dir):
    shared = registry.register_adapter(adapter_dir, name="shared", owner="ann", db=db_url)
    other = registry.register_adapter(adapter_dir, name="other", owner="ann", db=db_url)
    token = access_shares.share_adapter(shared, actor=ANN, db=db_url)
    assert access_shares.share_adapter(shared, actor=ANN, db=db_url) == token  # stable link
    guest = access_shares.open_share(shared, token, db=db_url)
    assert access.package_zip(shared, actor=guest, db=db_url).is_file()
    with pytest.raises(AccessDeniedError):
        access.get_adapter(other, actor=guest, db=db_url)
    with pytest.raises(AccessDeniedError):
        access.delete_adapter(shared, actor=guest, db=db_url)
    with pytest.raises(AccessDeniedError):
        access_shares.open_share(other, token, db=db_url)  # a token opens only its adapter
    access_shares.unshare_adapter(shared, actor=ANN, db=db_url)
    with pytest.raises(AccessDeniedError, match="No adapter here"):
        access_shares.open_share(shared, token, db=db_url)


def test_guessed_share_tokens_open_nothing(db_url, adapter_dir):
    shared = registry.register_adapter(adapter_dir, name="shared", owner="ann", db=db_url)
    token = access_shares.share_adapter(shared, actor=ANN, db=db_url)
    assert len(token) >= 43  # 32 random bytes, URL-safe
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    for guess in ("", None, token[:-1], token + "x", flipped, token.upper(), "0" * len(token)):
        with pytest.raises(AccessDeniedError, match="No adapter here"):
            access_shares.open_share(shared, guess, db=db_url)
    tokens = {
        access_shares.share_adapter(
            registry.register_adapter(adapter_dir, name=f"n{i}", owner="ann", db=db_url),
            actor=ANN,
            db=db_url,
        )
        for i in range(5)
    }
    assert len(tokens) == 5 and token not in tokens


def test_a_share_link_dies_with_its_adapter_even_if_the_id_comes_back(db_url, adapter_dir):
    shared = registry.register_adapter(adapter_dir, name="shared", owner="ann", db=db_url)
    token = access_shares.share_adapter(shared, actor=ANN, db=db_url)
    access.delete_adapter(shared, actor=ANN, db=db_url)
    registry.register_adapter(adapter_dir, name="bob's", owner="bob", db=db_url)
    with pytest.raises(AccessDeniedError, match="No adapter here"):
        access_shares.open_share(shared, token, db=db_url)


def test_signed_in_users_may_only_name_uploaded_files_samples_and_hub_models(
    db_url, upload, tmp_path, monkeypatch
):
    outside = jobs_support.write_reviews(tmp_path / "secret.csv")
    link = tmp_path / "data" / "uploads" / "abc" / "link.csv"
    link.symlink_to(outside)
    for bad in (outside, str(link), f"{tmp_path}/data/uploads/../../secret.csv"):
        with pytest.raises(AccessDeniedError, match="is not a file you uploaded"):
            access.enqueue(_spec(bad), actor=ANN, limits=OPEN, db=db_url)
        with pytest.raises(AccessDeniedError, match="is not a file you uploaded"):
            access.enqueue(_spec(upload, eval_data=bad), actor=ROOT, limits=OPEN, db=db_url)
    for model in (str(tmp_path), "../models/x", "~/models"):
        with pytest.raises(AccessDeniedError, match="looks like a folder on the server"):
            access.enqueue(_spec(upload, model=model), actor=ANN, limits=OPEN, db=db_url)

    sample = str(EXAMPLES / "sentiment_train.csv")
    assert access.enqueue(_spec(sample, model="org/model"), actor=ANN, limits=OPEN, db=db_url)
    # The local single user (studio on 127.0.0.1, the CLI) may name any file it can read,
    # and only limits the host set explicitly apply to it.
    assert access.enqueue(_spec(outside), actor=LOCAL, limits=OPEN, db=db_url)
    monkeypatch.setenv("IA3_MAX_STEPS", "20")
    assert access.enqueue(_spec(outside, steps=20), actor=LOCAL, db=db_url)
    with pytest.raises(LimitError, match="IA3_MAX_STEPS"):
        access.enqueue(_spec(outside, steps=21), actor=LOCAL, db=db_url)
    assert queue.get_job(1, db=db_url).owner == "ann"


def test_host_limits_refuse_with_the_setting_to_change(db_url, upload):
    limits = Limits(
        max_upload_mb=0.0005, max_rows=None, max_steps=None, max_jobs_per_user=None, max_queued=None
    )
    with pytest.raises(LimitError, match=r"IA3_MAX_UPLOAD_MB.*Upload a smaller file"):
        access.enqueue(_spec(upload), actor=ANN, limits=limits, db=db_url)
    with pytest.raises(LimitError, match="IA3_MAX_STEPS"):
        access.enqueue(_spec(upload, steps=501), actor=ANN, limits=Limits(max_steps=500), db=db_url)
    per_user = Limits(max_jobs_per_user=2, max_queued=3)
    for who in (ANN, ANN, BOB):
        access.enqueue(_spec(upload), actor=who, limits=per_user, db=db_url)
    with pytest.raises(LimitError, match="IA3_MAX_JOBS_PER_USER=2"):
        access.enqueue(_spec(upload), actor=ANN, limits=per_user, db=db_url)
    with pytest.raises(LimitError, match="The queue is full"):
        access.enqueue(_spec(upload), actor=BOB, limits=per_user, db=db_url)
    first = access.list_jobs(ANN, db=db_url)[-1].id
    access.cancel_job(first, actor=ANN, db=db_url)
    with pytest.raises(LimitError, match="The queue is full"):  # retrying counts like queueing
        access.retry_job(first, actor=ANN, limits=Limits(max_queued=2), db=db_url)
    assert access.enqueue(_spec(upload), actor=ANN, limits=per_user, db=db_url)


def test_rows_are_capped_to_the_host_limit(db_url, upload):
    admitted = access.admit(_spec(upload), actor=ANN, limits=Limits(max_rows=30), db=db_url)
    assert admitted["max_rows"] == 30
    smaller = access.admit(_spec(upload, max_rows=10), actor=ANN, limits=Limits(max_rows=30))
    assert smaller["max_rows"] == 10


def test_limits_read_from_the_environment_and_bad_values_name_the_variable():
    limits = Limits.from_env({"IA3_MAX_STEPS": "50", "IA3_MAX_QUEUED": "none"})
    assert limits.max_steps == 50 and limits.max_queued is None
    assert limits.max_jobs_per_user == Limits().max_jobs_per_user
    local = Limits.from_env({"IA3_MAX_STEPS": "50"}, defaults=False)  # the local user
    assert local.max_steps == 50 and local.max_upload_mb is None and local.max_queued is None

    for raw in ("-1", "lots", "0"):
        with pytest.raises(ConfigError, match="IA3_MAX_ROWS"):
            Limits.from_env({"IA3_MAX_ROWS": raw})


def test_work_limits_count_examples_and_micro_batch_tokens_and_read_3e9():
    limits = Limits.from_env({"IA3_MAX_MODEL_PARAMS": "3e9", "IA3_MAX_EXAMPLES": "1000"})
    assert limits.max_model_params == 3_000_000_000 and limits.max_examples == 1000
    access_limits.check_work({"steps": 10, "batch_size": 10, "grad_accum": 10}, limits)
    with pytest.raises(LimitError, match="IA3_MAX_EXAMPLES"):
        access_limits.check_work({"steps": 10, "batch_size": 10, "grad_accum": 11}, limits)
    with pytest.raises(LimitError, match="IA3_MAX_BATCH_TOKENS"):
        access_limits.check_work({"steps": 1, "batch_size": 256, "max_length": 512}, limits)
    access_limits.check_work({"steps": 10**6, "batch_size": 4096}, access_limits.NO_LIMITS)
    with pytest.raises(ConfigError, match="IA3_MAX_EXAMPLES"):
        Limits.from_env({"IA3_MAX_EXAMPLES": "2.5"})


def test_model_size_is_estimated_from_the_config_alone():
    gpt2 = {"n_embd": 768, "n_layer": 12, "vocab_size": 50257}  # 124M parameters really
    assert 100e6 < access_limits.estimate_params(gpt2) < 130e6
    mixtral = {
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "vocab_size": 32000,
        "intermediate_size": 14336,
        "num_local_experts": 8,
    }
    assert access_limits.estimate_params(mixtral) > 30e9  # 46.7B really
    hostile = {"hidden_size": "huge", "num_hidden_layers": -5, "text_config": {"d_model": 8}}
    assert access_limits.estimate_params(hostile) == 0


def test_an_admin_is_a_signed_in_user_named_in_the_admin_list():
    assert access.user("root", admins={"root"}).admin
    assert not access.user("ann", admins={"root"}).admin
    assert Actor("ann").signed_in and not access.ANONYMOUS.signed_in
