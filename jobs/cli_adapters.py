"""`ia3 adapters list|show|download|import|delete|rename|publish`: the registry from the command
line."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from jobs.cli_output import command as _command
from jobs.cli_output import emit as _emit
from jobs.cli_output import table as _table

# jobs.registry is imported in each command, not here: it loads torch (to read safetensors
# and check shapes), and every `ia3` command imports this module to build its parser.


def add_adapters(subparsers) -> None:
    parser = subparsers.add_parser("adapters", help="the adapter registry")
    commands = parser.add_subparsers(dest="adapters_command", required=True, metavar="ACTION")
    listing = _command(commands, "list", "registered adapters", _adapters_list)
    listing.add_argument("--base-model")
    listing.add_argument("--task", choices=("classify", "generate"))
    listing.add_argument("--owner")
    listing.add_argument("--search", help="text in the name, base model or task")
    listing.add_argument(
        "--sort", default="-created", help="created, name, size, base_model; -x reverses"
    )
    show = _command(commands, "show", "one adapter and its model card", _adapters_show)
    show.add_argument("id", type=int)
    download = _command(commands, "download", "save the adapter as a PEFT zip", _adapters_download)
    download.add_argument("id", type=int)
    download.add_argument("--out", required=True, help="zip file to write")
    imported = _command(
        commands, "import", "import a PEFT IA3 adapter folder or zip", _adapters_import
    )
    imported.add_argument("path", help="adapter folder or .zip")
    imported.add_argument("--base-model", help="base model to check the shapes against")
    imported.add_argument("--name")
    imported.add_argument("--owner")
    delete = _command(commands, "delete", "delete an adapter and its files", _adapters_delete)
    delete.add_argument("id", type=int)
    rename = _command(commands, "rename", "give an adapter a new name", _adapters_rename)
    rename.add_argument("id", type=int)
    rename.add_argument("name")
    publish = _command(
        commands,
        "publish",
        "push an adapter to a Hugging Face Hub repository (private unless --public); the token "
        "comes from HF_TOKEN or `hf auth login`, never from the command line",
        _adapters_publish,
    )
    publish.add_argument("id", type=int)
    publish.add_argument("repo", help="owner/name on the Hub")
    publish.add_argument("--public", action="store_true", help="create the repository public")
    publish.add_argument(
        "--dry-run", metavar="DIR", help="write the folder that would be pushed to DIR; no network"
    )


def _adapters_list(args) -> int:
    from jobs import registry  # noqa: PLC0415 - loads torch (see the top)

    adapters = registry.list_adapters(
        base_model=args.base_model,
        task=args.task,
        owner=args.owner,
        search=args.search,
        sort=args.sort,
    )
    rows = [
        (
            a.id,
            a.name,
            a.base_model or "",
            a.task or "",
            _metrics(a.metrics),
            f"{a.size_bytes / 1024:.0f} KB",
            a.owner or "",
            a.created_at.strftime("%Y-%m-%d %H:%M"),
        )
        for a in adapters
    ]
    header = ("ID", "NAME", "BASE MODEL", "TASK", "METRICS", "SIZE", "OWNER", "CREATED")
    summaries = [registry.adapter_summary(a) for a in adapters]
    _emit(args, summaries, _table(header, rows) if rows else "No adapters.")
    return 0


def _metrics(metrics) -> str:
    shown = [f"{k} {v:.3f}" for k, v in (metrics or {}).items() if isinstance(v, int | float)]
    return ", ".join(shown[:2])


def _adapters_show(args) -> int:
    from jobs import registry  # noqa: PLC0415 - loads torch (see the top)

    info = registry.get_adapter(args.id)
    lines = [f"Adapter {info.id}: {info.name}"]
    for label, value in (
        ("base model", info.base_model),
        ("task", info.task),
        ("labels", info.labels),
        ("targets", info.target_modules),
        ("trainable", info.trainable_params),
        ("metrics", _metrics(info.metrics)),
        ("size", f"{info.size_bytes} bytes"),
        ("sha256", info.sha256),
        ("job", info.job_id),
        ("owner", info.owner),
    ):
        lines.append(f"  {label:11} {value if value not in (None, '') else '-'}")
    lines += ["", info.card or ""]
    _emit(args, registry.adapter_summary(info), "\n".join(lines))
    return 0


def _adapters_download(args) -> int:
    from jobs import registry  # noqa: PLC0415 - loads torch (see the top)

    out = Path(args.out)
    if out.is_dir():
        out = out / registry.package_zip(args.id).name
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(registry.package_zip(args.id), out)
    _emit(args, {"id": args.id, "path": str(out)}, f"Saved adapter {args.id} to {out}")
    return 0


def _adapters_import(args) -> int:
    from jobs import registry  # noqa: PLC0415 - loads torch (see the top)

    adapter_id = registry.import_adapter(
        args.path, base_model=args.base_model, name=args.name, owner=args.owner
    )
    _emit(args, {"id": adapter_id}, f"Imported as adapter {adapter_id}.")
    return 0


def _adapters_delete(args) -> int:
    from jobs import registry  # noqa: PLC0415 - loads torch (see the top)

    registry.delete_adapter(args.id)
    _emit(args, {"id": args.id, "deleted": True}, f"Deleted adapter {args.id}.")
    return 0


def _adapters_rename(args) -> int:
    from jobs import registry  # noqa: PLC0415 - loads torch (see the top)

    info = registry.rename_adapter(args.id, args.name)
    _emit(args, registry.adapter_summary(info), f"Adapter {info.id} is now '{info.name}'.")
    return 0


def _adapters_publish(args) -> int:
    from jobs import hub_publish  # noqa: PLC0415 - loads torch (see the top)
    from jobs.access import LOCAL  # noqa: PLC0415 - loads torch through the registry

    repo = hub_publish.repo_id(args.repo)
    if args.dry_run:
        out = Path(args.dry_run)
        with hub_publish.staged_folder(args.id, actor=LOCAL) as folder:
            shutil.copytree(folder, out, dirs_exist_ok=True)
        files = sorted(p.name for p in out.iterdir())
        _emit(
            args,
            {"id": args.id, "repo": repo, "folder": str(out), "files": files},
            f"Would push {', '.join(files)} from {out} to {repo}.",
        )
        return 0
    token = os.environ.get("HF_TOKEN") or _saved_token()
    if not token:
        raise hub_publish.PublishError(
            "No Hugging Face token: set HF_TOKEN to a token with write access, or run "
            "`hf auth login` once."
        )
    done = hub_publish.publish(args.id, repo, token=token, actor=LOCAL, private=not args.public)
    _emit(args, done, f"Published adapter {args.id} to {done['url']}.")
    return 0


def _saved_token() -> str | None:
    from huggingface_hub import get_token  # noqa: PLC0415 - heavy, only when publishing

    return get_token()
