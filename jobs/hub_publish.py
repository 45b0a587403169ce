"""Publish one of a person's adapters to a Hugging Face Hub repository of theirs.

Only the owner may publish (jobs.access.publishable_adapter; anyone else hears the adapter is
missing). The folder pushed is built in a temporary directory and holds exactly the PEFT
weights, adapter_config.json and a README.md with the Hub's metadata: no training data, no
training_info.json, no server path. The token is an argument of the one request: it is never
stored, logged or put in a message. Every failure becomes a PublishError a person can act on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path, PurePath

from ia3engine.errors import IA3Error
from ia3engine.training.card import (
    front_matter,
    hub_metadata,
    model_card,
    split_card,
    with_hub_metadata,
)
from ia3engine.training.loading import portable_base_name
from jobs import access, registry
from jobs import adapter_files as files_
from jobs.access import Actor

log = logging.getLogger(__name__)

PUSHED = (files_.WEIGHTS, files_.CONFIG, files_.CARD)  # and nothing else
MAX_PART = 96  # the Hub's limit on a repository name
MAX_REPO = 200  # what a person may type at all
MAX_TOKEN = 512
TIMEOUT_S = 120.0
_PART = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
_KINDS = {"SEQ_CLS": "encoder", "CAUSAL_LM": "causal", "SEQ_2_SEQ_LM": "seq2seq"}
_TRUE = {"1", "on", "yes", "true"}
EXAMPLE = "your-name/my-adapter"

NO_TOKEN = (
    "No Hugging Face token: paste a token with write access (huggingface.co/settings/tokens) "
    "in the token box. It is used for this upload only and never stored."
)
OFFLINE = (
    "This studio runs offline (HF_HUB_OFFLINE is set), so nothing can be uploaded to the Hub. "
    "Unset HF_HUB_OFFLINE and restart the studio, or download the adapter zip and upload it "
    "yourself."
)
UNREACHABLE = (
    "Could not reach the Hugging Face Hub (no network, or the Hub is down). Nothing was "
    "uploaded; check the connection and try again, or download the zip and upload it yourself."
)
TIMED_OUT = (
    "The Hugging Face Hub did not answer within {seconds:.0f} s. The upload may be incomplete: "
    "check the repository on the Hub and publish again (it replaces the files)."
)
REFUSED_TOKEN = (
    "The Hugging Face Hub refused the token (401): it is wrong or expired. Create a token with "
    "write access at huggingface.co/settings/tokens and paste it."
)
NOT_ALLOWED = (
    "The Hugging Face Hub refused to let this token write to {repo} (403). Use a token with "
    "write access to that namespace (your own name, or an organization you may write to); a "
    "Space's sign-in needs the manage-repos scope."
)


class PublishError(IA3Error):
    """Publishing failed; the message says why and what to do, never the token."""


def offline() -> bool:
    """Whether huggingface_hub is told not to use the network (HF_HUB_OFFLINE)."""
    return (os.environ.get("HF_HUB_OFFLINE") or "").strip().lower() in _TRUE


def repo_id(text: str | None, *, default_owner: str | None = None) -> str:
    """`owner/name` checked against the Hub's rules (letters, digits, '-', '_', '.'; no '--'
    or '..'; at most 96 characters each); a bare name goes under `default_owner` when known."""
    text = (text or "").strip()
    if not text:
        raise PublishError(f"Name the repository to publish to, like {EXAMPLE}.")
    if len(text) > MAX_REPO:
        raise PublishError(f"That repository name has {len(text)} characters; keep it short.")
    parts = text.split("/")
    if len(parts) == 1 and default_owner:
        parts = [default_owner, parts[0]]
    if len(parts) != 2:
        raise PublishError(
            f"Write the repository as owner/name, like {EXAMPLE} (your Hub name, a slash, "
            "then the adapter's name)."
        )
    for part in parts:
        if (
            not _PART.match(part)
            or "--" in part
            or ".." in part
            or len(part) > MAX_PART
            or part.endswith(".git")
        ):
            raise PublishError(
                f"{part[:40]!r} is not a valid Hub name: use letters, digits, '-', '_' and '.', "
                f"start and end with a letter or digit, no '--' or '..', at most {MAX_PART} "
                f"characters (like {EXAMPLE})."
            )
    return "/".join(parts)


def checked_token(token: str | None) -> str:
    """The token as given, if it could be one (never echoed back)."""
    token = (token or "").strip()
    if not token:
        raise PublishError(NO_TOKEN)
    if len(token) > MAX_TOKEN or any(c.isspace() or not c.isprintable() for c in token):
        raise PublishError(
            "That is not a Hugging Face token (one word, like hf_...). Copy it again from "
            "huggingface.co/settings/tokens."
        )
    return token


# The folder that is pushed ------------------------------------------------------------------


def _public_base(name: str | None) -> str:
    """The base model as others can find it: a Hub id, never a folder on this machine."""
    name = portable_base_name(str(name or ""))
    if name.startswith(("/", "~", ".")) or re.match(r"^[A-Za-z]:[\\/]", name) or "\\" in name:
        return ""
    return name


def hub_config(raw: bytes, base: str) -> bytes:
    """adapter_config.json with the base model named by its Hub id (no server folder)."""
    config = json.loads(raw)
    config["base_model_name_or_path"] = base or None
    return json.dumps(config, indent=2, sort_keys=True).encode("utf-8")


def hub_card(info: registry.AdapterInfo, stored: dict[str, bytes]) -> str:
    """README.md for the Hub: the training card made again with the Hub metadata, or the
    adapter's own card (an imported one) with the metadata merged into its front matter."""
    try:
        training = json.loads(stored.get(files_.INFO) or b"{}")
        config = json.loads(stored.get(files_.CONFIG) or b"{}")
    except ValueError:
        training, config = {}, {}
    training = training if isinstance(training, dict) else {}
    raw = str(training.get("base_model") or info.base_model or "")
    base = _public_base(raw)
    shown = base or PurePath(raw.replace("\\", "/")).name  # a folder by its name only
    if isinstance(training.get("spec"), dict):
        card = model_card({**training, "base_model": shown})
    else:
        facts = {
            "base_model": base,
            "task": info.task or "classify",
            "kind": _KINDS.get(str(config.get("task_type")), "encoder"),
            "metrics": info.metrics,
            "name": info.name,
        }
        card = info.card or (stored.get(files_.CARD) or b"").decode("utf-8", "replace")
        card = (card or f"# {info.name}\n").replace(raw or "\0", shown)
        card = with_hub_metadata(card, hub_metadata(facts))
    if base:
        return card
    front, body = split_card(card)  # a folder's name is no Hub id: no base_model then
    front.pop("base_model", None)
    return front_matter(front) + "\n" + body.lstrip("\r\n")


@contextlib.contextmanager
def staged_folder(adapter_id: int, *, actor: Actor, db=None) -> Iterator[Path]:
    """The exact folder that would be pushed, in a temporary directory removed afterwards."""
    info = access.publishable_adapter(adapter_id, actor=actor, db=db)
    stored = registry.adapter_files(info.id, db=db)
    base = _public_base(info.base_model)
    work = Path(tempfile.mkdtemp(prefix="ia3-publish-"))
    try:
        folder = work / "adapter"
        folder.mkdir()
        (folder / files_.WEIGHTS).write_bytes(stored[files_.WEIGHTS])
        (folder / files_.CONFIG).write_bytes(hub_config(stored[files_.CONFIG], base))
        (folder / files_.CARD).write_text(hub_card(info, stored), encoding="utf-8")
        yield folder
    finally:
        shutil.rmtree(work, ignore_errors=True)


# The upload ---------------------------------------------------------------------------------


def publish(
    adapter_id: int,
    repo: str | None,
    *,
    token: str | None,
    actor: Actor,
    private: bool = True,
    default_owner: str | None = None,
    timeout_s: float = TIMEOUT_S,
    endpoint: str | None = None,
    db=None,
) -> dict:
    """Push the adapter to the Hub repository `repo` (created, private by default, if missing);
    returns {"repo", "url", "private"}. PublishError (or the access refusal) otherwise.
    `endpoint` replaces the Hub's address (HF_ENDPOINT) for this call only."""
    access.publishable_adapter(adapter_id, actor=actor, db=db)  # before anything else is said
    repo = repo_id(repo, default_owner=default_owner)
    token = checked_token(token)
    if offline():
        raise PublishError(OFFLINE)
    with staged_folder(adapter_id, actor=actor, db=db) as folder:
        url = _push(folder, repo, token, bool(private), timeout_s, endpoint)
    log.info("adapter %s published to the Hub as %s (private=%s)", adapter_id, repo, private)
    return {"repo": repo, "url": url, "private": bool(private)}


def _push(folder: Path, repo: str, token: str, private: bool, timeout_s: float, endpoint) -> str:
    """create_repo + upload_folder in a helper thread, waited for at most `timeout_s`."""
    outcome: dict = {}

    def work() -> None:
        try:
            from huggingface_hub import HfApi  # heavy (TID253): only when publishing

            api = HfApi(endpoint=endpoint, token=token)
            made = api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
            api.upload_folder(
                folder_path=str(folder),
                repo_id=repo,
                repo_type="model",
                allow_patterns=list(PUSHED),
                commit_message="Publish an (IA)^3 adapter from IA3 Studio",
            )
            outcome["url"] = str(made)
        except BaseException as error:  # handed to the caller, which explains it
            outcome["error"] = error

    thread = threading.Thread(target=work, name="hub-publish", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        log.warning("publishing to %s timed out after %.0f s", repo, timeout_s)
        raise PublishError(TIMED_OUT.format(seconds=timeout_s))
    if "error" in outcome:
        raise explain_failure(outcome["error"], repo) from None
    return outcome["url"]


def explain_failure(error: BaseException, repo: str) -> PublishError:
    """The PublishError for what huggingface_hub raised (logged by type and status only)."""
    names = {cls.__name__ for cls in type(error).__mro__}
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None) if response is not None else None
    log.warning("publishing to %s failed: %s (HTTP %s)", repo, type(error).__name__, status)
    if "OfflineModeIsEnabled" in names:
        return PublishError(OFFLINE)
    if status == 401:
        return PublishError(REFUSED_TOKEN)
    if status == 403:
        return PublishError(NOT_ALLOWED.format(repo=repo))
    if status == 404:
        return PublishError(
            f"The Hub has no namespace {repo.split('/')[0]!r} this token may write to (404): "
            f"publish under your own Hub name, like {EXAMPLE}."
        )
    if status in (400, 409, 422) or "HFValidationError" in names:
        return PublishError(
            f"The Hub refused the repository name {repo!r} (HTTP {status}): pick another name, "
            f"like {EXAMPLE}."
        )
    if "TimeoutException" in names or isinstance(error, TimeoutError):
        return PublishError(UNREACHABLE)
    if status is not None:
        return PublishError(
            f"The Hugging Face Hub answered HTTP {status}; nothing was published. Try again later."
        )
    if names & {"TransportError", "ConnectError", "NetworkError"} or isinstance(error, OSError):
        return PublishError(UNREACHABLE)
    return PublishError(
        f"Publishing failed ({type(error).__name__}); nothing was published. Try again, or "
        "download the zip and upload it yourself."
    )
