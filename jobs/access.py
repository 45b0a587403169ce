"""Who may see and change which job, dataset and adapter: every call names its `actor`.

A signed-in user sees, downloads, cancels and deletes only what they own; an admin sees all;
the local single user (no sign-in, studio on 127.0.0.1) is an admin. Refusals never say
whether the thing exists. The app, the API and the share page call these, not queue/registry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ia3engine.errors import AdapterError
from ia3engine.training.spec import TrainSpec
from jobs import access_limits, adapter_files, predict_jobs, queue, registry, time_limit
from jobs.access_limits import Limits
from jobs.errors import AccessDeniedError, JobError
from jobs.specs import DATA_FIELDS, spec_from_dict, validated_spec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Actor:
    """The person a call is made for."""

    name: str | None  # the signed-in user; None for the local user or nobody
    admin: bool = False  # sees and changes everything
    shared_adapter: int | None = None  # read-only access to one adapter through its share link

    @property
    def signed_in(self) -> bool:
        return self.name is not None


LOCAL = Actor(None, admin=True)  # `ia3 studio` on 127.0.0.1 with no access mode, and the CLI
ANONYMOUS = Actor(None)  # nobody signed in yet (a Space with OAuth, before the login)

SIGN_IN = "You are not signed in. Sign in (the button at the top of the page) and try again."


def user(name: str, *, admins=()) -> Actor:
    """The actor for a signed-in user; names in `admins` see everything."""
    return Actor(name, admin=name in set(admins))


def owner_for(actor: Actor) -> str | None:
    """The owner recorded on what `actor` creates (None for the local user)."""
    if actor.signed_in:
        return actor.name
    if actor == LOCAL:
        return None
    raise AccessDeniedError(SIGN_IN)


def may_see(actor: Actor, owner: str | None) -> bool:
    return actor.admin or (actor.signed_in and owner == actor.name)


def _no_job(job_id) -> AccessDeniedError:
    return AccessDeniedError(f"No job #{job_id} among yours; the Jobs tab lists the jobs you own.")


def _no_adapter(adapter_id) -> AccessDeniedError:
    return AccessDeniedError(
        f"No adapter #{adapter_id} among yours; the Adapters tab lists the adapters you own."
    )


# Jobs ----------------------------------------------------------------------------------


def _job(job_id: int, actor: Actor, db) -> queue.JobInfo:
    """The job if `actor` may see it; the same refusal whether it is missing or not theirs."""
    try:
        job = queue.get_job(int(job_id), db=db)
    except JobError:
        job = None
    if job is None or not may_see(actor, job.owner):
        raise _no_job(job_id)
    return job


def list_jobs(actor: Actor, *, status=None, limit: int = 200, db=None) -> list[queue.JobInfo]:
    """Newest first: the actor's own jobs, or everyone's for an admin."""
    if actor.admin:
        return queue.list_jobs(status=status, limit=limit, db=db)
    if not actor.signed_in:
        return []
    return queue.list_jobs(owner=actor.name, status=status, limit=limit, db=db)


def get_job(job_id: int, *, actor: Actor, db=None) -> queue.JobInfo:
    return _job(job_id, actor, db)


def job_events(job_id: int, *, actor: Actor, after_id: int = 0, db=None):
    _job(job_id, actor, db)
    return queue.job_events(int(job_id), after_id=int(after_id), db=db)


def cancel_job(job_id: int, *, actor: Actor, db=None) -> queue.JobInfo:
    _job(job_id, actor, db)
    return queue.cancel_job(int(job_id), db=db)


def job_insights(job_id: int, *, actor: Actor, db=None) -> dict | None:
    """A training job's validation insights (None until a finished run stored them)."""
    _job(job_id, actor, db)
    return queue.job_insights(int(job_id), db=db)


def retry_job(job_id: int, *, actor: Actor, limits: Limits | None = None, db=None) -> int:
    """Requeue a failed or cancelled job; it counts against the queue limits like a new one."""
    job = _job(job_id, actor, db)
    limits = limits or Limits.from_env(defaults=actor != LOCAL)
    access_limits.check_queue_room(job.owner, limits, db=db)  # the quick answer

    def room(conn):  # the binding one: counted in the transaction that requeues
        access_limits.check_queue_room(job.owner, limits, conn=conn)

    return queue.retry_job(int(job_id), room=room, db=db)


def admit(spec, *, actor: Actor, limits: Limits | None = None, db=None) -> dict:
    """The spec as it may be queued for `actor`, or a refusal naming the limit or path.

    Signed-in users may only name uploaded files or samples and Hub (or bundled) models;
    every one of them gets the host's limits. The returned dict has max_rows capped.
    """
    limits = limits or Limits.from_env(defaults=actor != LOCAL)
    owner = owner_for(actor)
    spec = spec if isinstance(spec, TrainSpec) else spec_from_dict(spec)
    if actor != LOCAL:
        # Before validation: its messages would tell whether a path exists on the server.
        access_limits.check_model(spec.model, limits)
        for field in DATA_FIELDS:
            access_limits.check_data_path(field, getattr(spec, field))
    spec_dict = validated_spec(spec)
    for field in DATA_FIELDS:
        if spec_dict.get(field):
            access_limits.check_file_size(spec_dict[field], limits)
    work = spec.resolved().to_dict()  # the preset's steps and batch count as much as typed ones
    access_limits.check_steps(work, limits)
    access_limits.check_work(work, limits)
    access_limits.check_queue_room(owner, limits, db=db)
    return access_limits.capped_rows(spec_dict, limits)


def enqueue(
    spec, *, actor: Actor, upload_data: bool = False, limits: Limits | None = None, db=None
) -> int:
    """Admit the spec for `actor` and queue it as theirs; returns the job id.

    The queue limits are counted again in the transaction that adds the job, so parallel
    requests cannot all pass the count before any of them is added. The job keeps the
    host's wall-clock limit (IA3_MAX_JOB_MINUTES) for whichever worker runs it.
    """
    limits = limits or Limits.from_env(defaults=actor != LOCAL)
    admitted = admit(spec, actor=actor, limits=limits, db=db)
    owner = owner_for(actor)

    def room(conn):
        access_limits.check_queue_room(owner, limits, conn=conn)

    job_id = queue.enqueue(
        admitted,
        owner=owner,
        upload_data=upload_data,
        room=room,
        db=db,
        max_seconds=time_limit.job_seconds(defaults=actor != LOCAL),
    )
    log.info("job %s queued for %s", job_id, actor.name or "the local user")
    return job_id


# Predict jobs --------------------------------------------------------------------------


def enqueue_predict(
    data,
    *,
    actor: Actor,
    adapter_id: int | None = None,
    model: str | None = None,
    text_column: str | None = None,
    limits: Limits | None = None,
    db=None,
) -> int:
    """Queue a predict job for `actor`: their file (an upload, for signed-in users) through an
    adapter they may use (theirs, or any for an admin) or a base model alone, within the host's
    limits (file size, rows, queue room, the wall-clock limit); returns the job id."""
    limits = limits or Limits.from_env(defaults=actor != LOCAL)
    owner = owner_for(actor)
    adapter = folder = None
    if adapter_id is not None:
        adapter = _adapter(adapter_id, actor, db, write=True)  # a share link lends no worker
        folder = registry.adapter_folder(adapter.id, db=db)
    if actor != LOCAL:
        # Before anything reads the path: its messages would tell whether it exists here.
        access_limits.check_data_path("data", str(data or ""))
        if adapter is None:
            access_limits.check_model(str(model or ""), limits)
    access_limits.check_file_size(data, limits)
    access_limits.check_queue_room(owner, limits, db=db)
    spec = predict_jobs.predict_spec(
        model or "",
        data,
        adapter=adapter,
        adapter_folder=folder,
        text_column=text_column,
        max_rows=limits.max_rows,
        db=db,
    )

    def room(conn):
        access_limits.check_queue_room(owner, limits, conn=conn)

    job_id = predict_jobs.enqueue_predict(
        spec,
        owner=owner,
        room=room,
        max_seconds=time_limit.job_seconds(defaults=actor != LOCAL),
        db=db,
    )
    log.info("predict job %s queued for %s", job_id, actor.name or "the local user")
    return job_id


def prediction_file(job_id: int, *, actor: Actor, db=None) -> Path:
    """A finished predict job's output file, for its owner (or an admin) only."""
    return predict_jobs.result_file(_job(job_id, actor, db), db=db)


# Adapters ------------------------------------------------------------------------------


def _adapter(adapter_id: int, actor: Actor, db, *, write: bool = False) -> registry.AdapterInfo:
    try:
        info = registry.get_adapter(int(adapter_id), db=db)
    except AdapterError:
        info = None
    if info is None:
        raise _no_adapter(adapter_id)
    shared = not write and actor.shared_adapter == info.id
    if not (may_see(actor, info.owner) or shared):
        raise _no_adapter(adapter_id)
    return info


def list_adapters(
    actor: Actor, *, base_model=None, task=None, search=None, sort="-created", db=None
):
    """The actor's adapters (everyone's for an admin), filtered like registry.list_adapters."""
    if not actor.admin and not actor.signed_in:
        return []
    owner = None if actor.admin else actor.name
    return registry.list_adapters(
        base_model=base_model, task=task, owner=owner, search=search, sort=sort, db=db
    )


def get_adapter(adapter_id: int, *, actor: Actor, db=None) -> registry.AdapterInfo:
    return _adapter(adapter_id, actor, db)


def adapter_insights(adapter_id: int, *, actor: Actor, db=None) -> dict | None:
    """The validation insights of the job that trained the adapter (None for an imported
    one). They hold validation rows, so only the owner or an admin reads them, never a
    share-link visitor."""
    info = _adapter(adapter_id, actor, db, write=True)
    if info.job_id is None:
        return None
    try:
        return queue.job_insights(int(info.job_id), db=db)
    except JobError:  # the job row is gone
        return None


def adapter_folder(adapter_id: int, *, actor: Actor, db=None) -> Path:
    _adapter(adapter_id, actor, db)
    return registry.adapter_folder(int(adapter_id), db=db)


def package_zip(adapter_id: int, *, actor: Actor, db=None) -> Path:
    _adapter(adapter_id, actor, db)
    return registry.package_zip(int(adapter_id), db=db)


def rename_adapter(adapter_id: int, name: str, *, actor: Actor, db=None):
    _adapter(adapter_id, actor, db, write=True)
    return registry.rename_adapter(int(adapter_id), name, db=db)


def delete_adapter(adapter_id: int, *, actor: Actor, db=None) -> None:
    _adapter(adapter_id, actor, db, write=True)
    registry.delete_adapter(int(adapter_id), db=db)


def publishable_adapter(adapter_id: int, *, actor: Actor, db=None) -> registry.AdapterInfo:
    """The adapter if `actor` may publish it to the Hub: only its owner (the local user owns
    everything on a local studio). An admin may manage others' adapters but not republish them
    under their own Hub account; a share link lends nothing. Other refusals read as missing."""
    info = _adapter(adapter_id, actor, db, write=True)
    if actor != LOCAL and not (actor.signed_in and info.owner == actor.name):
        raise _no_adapter(adapter_id)
    return info


def import_adapter(
    path, *, actor: Actor, base_model=None, name=None, limits: Limits | None = None, db=None
) -> int:
    """Import an adapter zip or folder as the actor's own (size-limited, safetensors only)."""
    owner = owner_for(actor)
    limits = limits or Limits.from_env(defaults=actor != LOCAL)
    access_limits.check_file_size(path, limits)
    named = base_model or (None if actor == LOCAL else _named_base(path))
    if actor != LOCAL and named:
        access_limits.check_model(named, limits)
    return registry.import_adapter(path, base_model=base_model, name=name, owner=owner, db=db)


def _named_base(path) -> str | None:
    """The base model an adapter's own files name (checked before anything loads it)."""
    config, info, _ = adapter_files.parse(adapter_files.read_source(path))
    return info.get("base_model") or config.get("base_model_name_or_path")
