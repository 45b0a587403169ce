"""Command line for durable work: `ia3 submit`, `ia3 jobs ...`, `ia3 adapters ...`, `ia3 worker`.

Thin: each command parses its flags, calls jobs.queue / jobs.registry / jobs.worker, and
prints a table or, with --json, one JSON document. Errors print their message and exit 1.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
import threading
import time
from pathlib import Path

from ia3engine.cli import add_train_arguments, spec_from_args
from jobs import queue
from jobs.cli_adapters import add_adapters
from jobs.cli_output import command as _command
from jobs.cli_output import emit as _emit
from jobs.cli_output import table as _table
from jobs.status import FINISHED, Status


def add_commands(subparsers) -> None:
    _add_submit(subparsers)
    _add_jobs(subparsers)
    add_adapters(subparsers)
    _add_worker(subparsers)


# submit --------------------------------------------------------------------------------


def _add_submit(subparsers) -> None:
    parser = _command(
        subparsers, "submit", "queue a training job (the flags of `ia3 train`)", _submit
    )
    add_train_arguments(parser)
    queueing = parser.add_argument_group("queue")
    queueing.add_argument("--priority", type=int, default=0, help="higher runs first")
    queueing.add_argument("--owner", default=None, help="who the job and its adapter belong to")
    queueing.add_argument("--max-attempts", type=int, default=3, help="runs after worker crashes")
    queueing.add_argument(
        "--upload-data",
        action="store_true",
        help="keep the dataset files in the database, so workers on other machines can read them",
    )


def _submit(args) -> int:
    job_id = queue.enqueue(
        spec_from_args(args),
        owner=args.owner,
        priority=args.priority,
        max_attempts=args.max_attempts,
        upload_data=args.upload_data,
    )
    _emit(args, {"id": job_id}, str(job_id))
    return 0


# jobs ----------------------------------------------------------------------------------


def _add_jobs(subparsers) -> None:
    parser = subparsers.add_parser("jobs", help="list, inspect, cancel and retry training jobs")
    commands = parser.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    listing = _command(commands, "list", "jobs, newest first", _jobs_list)
    listing.add_argument("--status", choices=[status.value for status in Status])
    listing.add_argument("--owner")
    listing.add_argument("--limit", type=int, default=50)
    for name, help_, func in (
        ("show", "one job: status, progress, spec, message", _jobs_show),
        ("cancel", "cancel a queued job, or stop a running one at its next step", _jobs_cancel),
        ("retry", "put a failed or cancelled job back in the queue (same id)", _jobs_retry),
        ("logs", "a job's events: steps, evaluations, checkpoints, log lines", _jobs_logs),
    ):
        command = _command(commands, name, help_, func)
        command.add_argument("id", type=int, help="job id")
        if name == "logs":
            command.add_argument("--follow", action="store_true", help="wait for new events")


def _job_dict(job) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(job), default=str))


def _progress(job) -> str:
    if job.step is None:
        return ""
    loss = f" loss {job.loss:.4f}" if job.loss is not None else ""
    return f"{job.step}/{job.total_steps or '?'}{loss}"


def _jobs_list(args) -> int:
    jobs = queue.list_jobs(owner=args.owner, status=args.status, limit=args.limit)
    rows = [
        (
            j.id,
            j.status,
            j.spec.get("model", ""),
            Path(str(j.spec.get("data", ""))).name,
            _progress(j),
            j.owner or "",
            j.created_at.strftime("%Y-%m-%d %H:%M"),
        )
        for j in jobs
    ]
    header = ("ID", "STATUS", "MODEL", "DATA", "PROGRESS", "OWNER", "CREATED")
    _emit(args, [_job_dict(j) for j in jobs], _table(header, rows) if rows else "No jobs.")
    return 0


def _jobs_show(args) -> int:
    job = queue.get_job(args.id)
    lines = [
        f"Job {job.id}: {job.status}" + (" (cancel requested)" if job.cancel_requested else ""),
        f"  model     {job.spec.get('model')}",
        f"  data      {job.spec.get('data')}",
        f"  progress  {_progress(job) or '-'}"
        + (f", about {job.eta_s:.0f} s left" if job.eta_s and job.status == Status.RUNNING else ""),
        f"  attempts  {job.attempts} of {job.max_attempts}"
        + (f" on {job.worker}" if job.worker else ""),
        f"  owner     {job.owner or '-'}   priority {job.priority}",
        f"  created   {job.created_at:%Y-%m-%d %H:%M:%S}",
    ]
    if job.adapter_id is not None:
        lines.append(f"  adapter   {job.adapter_id}")
    if job.kind == "predict":
        lines.insert(1, f"  kind      predict with {job.spec.get('adapter_name')}")
        if job.result_blob_id is not None:
            lines.append(f"  result    stored dataset {job.result_blob_id}")
    if job.message:
        lines.append(f"  message   {job.message}")
    _emit(args, _job_dict(job), "\n".join(lines))
    return 0


def _jobs_cancel(args) -> int:
    job = queue.cancel_job(args.id)
    text = (
        f"Job {job.id} cancelled."
        if job.status == Status.CANCELLED
        else f"Job {job.id} will stop at its next step and keep its last checkpoint."
    )
    _emit(args, _job_dict(job), text)
    return 0


def _jobs_retry(args) -> int:
    job_id = queue.retry_job(args.id)
    _emit(
        args,
        {"id": job_id},
        f"Job {job_id} is back in the queue; it resumes from its last checkpoint.",
    )
    return 0


def _event_line(event) -> str:
    data = dict(event.data)
    if event.type == "step":
        text = f"step {data.get('step')}/{data.get('total_steps')} loss {data.get('loss')}"
    elif event.type == "eval":
        text = f"eval at step {data.get('step')}: {data.get('metrics')}"
    elif event.type == "checkpoint":
        text = f"checkpoint at step {data.get('step')}"
    else:
        text = str(data.pop("message", "")) or json.dumps(data, default=str)
    line = f"{event.time:%H:%M:%S} [{event.attempt}] {event.type:10} {text}"
    if data.get("traceback"):
        line += "\n" + data["traceback"].rstrip()
    return line


def _event_dict(event) -> dict:
    return {
        "id": event.id,
        "type": event.type,
        "time": str(event.time),
        "attempt": event.attempt,
        **event.data,
    }


def _jobs_logs(args) -> int:
    """The events so far (--json: one array); --follow prints them as they come (--json: one
    object per line, JSON Lines) until the job finishes."""
    queue.get_job(args.id)  # a clear error for an unknown id
    if args.json and not args.follow:
        _emit(args, [_event_dict(e) for e in queue.job_events(args.id)], "")
        return 0
    after = 0
    while True:
        events = queue.job_events(args.id, after_id=after)
        for event in events:
            if args.json:
                print(json.dumps(_event_dict(event), default=str))
            else:
                print(_event_line(event))
            after = event.id
        sys.stdout.flush()
        if not args.follow or queue.get_job(args.id).status in FINISHED:
            return 0
        time.sleep(1.0)


# worker --------------------------------------------------------------------------------


def _add_worker(subparsers) -> None:
    parser = _command(subparsers, "worker", "run queued training jobs (Ctrl-C stops)", _worker)
    parser.add_argument("--device", help="cuda:1, cpu, mps; default: the best available")
    parser.add_argument("--once", action="store_true", help="run at most one job, then exit")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between queue checks")
    parser.add_argument(
        "--stale-after",
        type=float,
        default=60.0,
        help="seconds without a heartbeat before another worker takes a job over",
    )


def _worker(args) -> int:
    # Here, not at the top: the worker loads torch, and `ia3 jobs ...` must start without it.
    from jobs.worker import Worker  # noqa: PLC0415

    worker = Worker(device=args.device, poll_s=args.poll, stale_after_s=args.stale_after)
    stop = threading.Event()
    worker.stopping = stop
    # SIGTERM (docker stop, systemd) stops at the next step; the job goes back to the queue.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.once:
        ran = worker.run_one()
        _emit(
            args,
            {"worker": worker.worker_id, "ran": ran},
            "Ran one job." if ran else "The queue is empty.",
        )
        return 0
    print(f"Worker {worker.worker_id} waiting for jobs (Ctrl-C to stop).", file=sys.stderr)
    try:
        worker.run_forever(stop)
    except KeyboardInterrupt:
        print("Stopped.", file=sys.stderr)
    if args.json:
        _emit(args, {"worker": worker.worker_id, "stopped": True}, "")
    return 0
