"""Reading adapter files from a folder or a zip, and checking them before anything is kept.

Safetensors only (a pickle could run code), zip entries that stay inside the archive, and
every tensor checked against the named base model built on the meta device (no weights).
"""

from __future__ import annotations

import json
import logging
import re
import stat
import zipfile
from pathlib import Path, PurePosixPath

import torch
from safetensors.torch import load as load_safetensors

from ia3engine.data.templates import template_problem
from ia3engine.errors import AdapterFileError
from ia3engine.training.loading import resolve_model_path
from ia3engine.training.spec import BOUNDS
from ia3engine.wrappers import VECTOR
from jobs.blobs import safe_member_name

log = logging.getLogger(__name__)

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
CARD = "README.md"
INFO = "training_info.json"
KEPT_FILES = (WEIGHTS, CONFIG, CARD, INFO)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
MAX_ADAPTER_BYTES = 512 * 1024 * 1024
_PREFIX = "base_model.model."
_VECTOR = "." + VECTOR  # a file key ends with the vector's attribute


def read_source(path: str | Path) -> dict[str, bytes]:
    """The adapter files in a folder or zip, by name; refuses anything unsafe."""
    path = Path(path)
    if path.is_dir():
        return _from_folder(path)
    if path.is_file() and zipfile.is_zipfile(path):
        return _from_zip(path)
    if path.is_file():
        raise AdapterFileError(
            f"'{path.name}' is neither a folder nor a zip; import the adapter folder (with "
            f"{CONFIG} and {WEIGHTS}) or a zip of it."
        )
    raise AdapterFileError(f"'{path}' does not exist; check the path.")


def _refuse_pickles(names) -> None:
    pickles = sorted(n for n in names if n.lower().endswith(PICKLE_SUFFIXES))
    if pickles:
        raise AdapterFileError(
            f"Refused: {', '.join(pickles)} is a pickle file, which can run code when loaded. "
            f"Only {WEIGHTS} is accepted; re-save the adapter with safetensors "
            "(PEFT: save_pretrained(folder, safe_serialization=True))."
        )


def _require(files: dict[str, bytes], where: str) -> dict[str, bytes]:
    missing = [name for name in (CONFIG, WEIGHTS) if name not in files]
    if missing:
        raise AdapterFileError(
            f"{where} has no {' or '.join(missing)}; an IA3 adapter in PEFT's format needs "
            f"{CONFIG} and {WEIGHTS}."
        )
    return files


def _from_folder(folder: Path) -> dict[str, bytes]:
    _refuse_pickles(p.name for p in folder.iterdir())
    files = {name: (folder / name).read_bytes() for name in KEPT_FILES if (folder / name).is_file()}
    return _require(files, f"Folder '{folder}'")


def _from_zip(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        infos = [info for info in archive.infolist() if not info.is_dir()]
        for info in infos:
            if safe_member_name(info.filename) is None:
                raise AdapterFileError(
                    f"Refused '{path.name}': entry {info.filename!r} points outside the archive "
                    "(absolute path or '..'). Zip the adapter folder's files directly."
                )
            if stat.S_ISLNK(info.external_attr >> 16):
                raise AdapterFileError(
                    f"Refused '{path.name}': entry {info.filename!r} is a symbolic link."
                )
        if sum(info.file_size for info in infos) > MAX_ADAPTER_BYTES:
            raise AdapterFileError(
                f"Refused '{path.name}': it unpacks to more than "
                f"{MAX_ADAPTER_BYTES // 2**20} MB, far more than an IA3 adapter needs."
            )
        _refuse_pickles(info.filename for info in infos)
        # The files may sit at the top or inside one folder (a zipped adapter folder).
        configs = [i.filename for i in infos if PurePosixPath(i.filename).name == CONFIG]
        if len(configs) > 1:
            raise AdapterFileError(
                f"'{path.name}' holds {len(configs)} adapters ({', '.join(configs)}); "
                "import one adapter per zip."
            )
        root = PurePosixPath(configs[0]).parent if configs else PurePosixPath(".")
        files = {}
        for info in infos:
            member = PurePosixPath(info.filename)
            if member.parent == root and member.name in KEPT_FILES:
                files[member.name] = archive.read(info)
    return _require(files, f"Zip '{path.name}'")


def parse(files: dict[str, bytes]) -> tuple[dict, dict, dict]:
    """(adapter config, training info, tensors) from the files, or a clear refusal."""
    config = _json(files[CONFIG], CONFIG)
    info = _json(files[INFO], INFO) if INFO in files else {}
    if str(config.get("peft_type", "")).upper() != "IA3":
        raise AdapterFileError(
            f"{CONFIG} says peft_type={config.get('peft_type')!r}; only IA3 adapters are "
            "accepted here."
        )
    problems = config_problems(config) + info_problems(info)
    if problems:
        raise AdapterFileError(
            "Refused: the adapter's settings are out of bounds:\n  "
            + "\n  ".join(problems[:8])
            + "\nFix them in the adapter's files (or train it again here) and import it again."
        )
    try:
        tensors = load_safetensors(files[WEIGHTS])
    except Exception as exc:  # safetensors raises its own error type for corrupt headers
        raise AdapterFileError(
            f"{WEIGHTS} is not a readable safetensors file ({exc}); export the adapter again."
        ) from exc
    if not tensors:
        raise AdapterFileError(f"{WEIGHTS} holds no tensors; export the adapter again.")
    return config, info, tensors


# What the studio later reads from an imported adapter (the playground renders its template and
# prompt for every input and scores every label), bounded like a spec trained here.
MAX_JSON_BYTES = 1024 * 1024
MAX_LABELS = 1000  # far more classes than a classifier here is trained with
MAX_NAME_CHARS = 200
MAX_LABEL_CHARS = 500
KINDS = ("encoder", "causal", "seq2seq")
PROMPT_SLOTS = ("text", "options")


def _short_text(value, key: str, most: int = MAX_NAME_CHARS) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, str) or len(value) > most:
        return [f"{key} must be text of at most {most} characters."]
    return []


def _module_names(value, key: str) -> list[str]:
    if value is None or (isinstance(value, str) and len(value) <= 2000):
        return []
    if (
        isinstance(value, list)
        and len(value) <= 1000
        and all(isinstance(v, str) and len(v) <= MAX_NAME_CHARS for v in value)
    ):
        return []
    return [f"{CONFIG}: {key} must be a pattern or a list of at most 1,000 module names."]


def config_problems(config: dict) -> list[str]:
    """What is wrong with an adapter_config.json's fields that the studio stores or uses."""
    problems = _short_text(config.get("base_model_name_or_path"), f"{CONFIG}: base model", 500)
    problems += _short_text(config.get("revision"), f"{CONFIG}: revision")
    problems += _short_text(config.get("task_type"), f"{CONFIG}: task_type", 32)
    for key in ("target_modules", "feedforward_modules"):
        problems += _module_names(config.get(key), key)
    return problems


def info_problems(info: dict) -> list[str]:
    """What is wrong with a training_info.json: labels, template, prompt, lengths and names."""
    problems = []
    if info.get("task") not in (None, "classify", "generate"):
        problems.append(f"{INFO}: task must be 'classify' or 'generate'.")
    if info.get("kind") not in (None, *KINDS):
        problems.append(f"{INFO}: kind must be one of {', '.join(KINDS)}.")
    labels = info.get("labels")
    if labels is not None and not (
        isinstance(labels, list)
        and len(labels) <= MAX_LABELS
        and all(isinstance(x, str) and 0 < len(x) <= MAX_LABEL_CHARS for x in labels)
        and len(set(labels)) == len(labels)
    ):
        problems.append(
            f"{INFO}: labels must be a list of at most {MAX_LABELS:,} distinct names of 1 to "
            f"{MAX_LABEL_CHARS} characters."
        )
    for key, slots in (("template", None), ("prompt", PROMPT_SLOTS)):
        if info.get(key) is not None:
            problem = template_problem(info[key], what=f"{INFO} {key}", allowed=slots)
            problems += [problem] if problem else []
    for key in ("text_column", "label_column", "base_model"):
        problems += _short_text(info.get(key), f"{INFO}: {key}", 500)
    for key in ("data_fingerprint", "dataset_fingerprint"):
        problems += _short_text(info.get(key), f"{INFO}: {key}", 128)
    spec = info.get("spec")
    if spec is not None and not isinstance(spec, dict):
        problems.append(f"{INFO}: spec must be a JSON object.")
    length = (spec or {}).get("max_length") if isinstance(spec, dict) else None
    low, high, says = BOUNDS["max_length"]
    if length is not None and (
        isinstance(length, bool) or not isinstance(length, int) or not low <= length <= high
    ):
        problems.append(f"{INFO}: spec.max_length must be {says}.")
    metrics = info.get("metrics")
    if metrics is not None and not (isinstance(metrics, dict) and len(metrics) <= 100):
        problems.append(f"{INFO}: metrics must be a JSON object of at most 100 entries.")
    return problems


def _json(data: bytes, name: str) -> dict:
    if len(data) > MAX_JSON_BYTES:
        raise AdapterFileError(
            f"{name} is {len(data) / 2**20:.1f} MB; an adapter's settings fit in "
            f"{MAX_JSON_BYTES // 2**20} MB. Export the adapter again."
        )
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdapterFileError(f"{name} is not valid JSON ({exc}); fix or re-export it.") from exc
    if not isinstance(value, dict):
        raise AdapterFileError(f"{name} must hold a JSON object.")
    return value


def _is_feedforward(module: str, feedforward) -> bool:
    if isinstance(feedforward, str):
        return re.fullmatch(feedforward, module) is not None
    return any(module == f or module.endswith("." + f) for f in feedforward or [])


def _in_out(module) -> tuple[int, int] | None:
    """(in, out) features of a layer IA3 can scale, from its weight alone."""
    weight = getattr(module, "weight", None)
    if weight is None or weight.dim() < 2:
        return None
    if type(module).__name__ == "Conv1D":  # transformers' GPT-2 layer stores (in, out)
        return weight.shape[0], weight.shape[1]
    return weight.shape[1] * getattr(module, "groups", 1), weight.shape[0]


def check_against_model(config: dict, tensors: dict, model, base_name: str) -> None:
    """Every tensor must name a module or parameter of `model` with a fitting shape."""
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    num_labels = getattr(model.config, "num_labels", None)
    problems = []
    for key, tensor in tensors.items():
        name = key.removeprefix(_PREFIX)
        if name.endswith(_VECTOR):
            problem = _check_vector(name.removesuffix(_VECTOR), tensor, modules, config)
        else:
            problem = _check_head(name, tensor, params, num_labels)
        if problem:
            problems.append(f"{key}: {problem}")
    if problems:
        shown = "\n  ".join(problems[:8]) + ("\n  ..." if len(problems) > 8 else "")
        raise AdapterFileError(
            f"The adapter does not fit base model '{base_name}':\n  {shown}\n"
            "Pass the base model it was trained on (--base-model)."
        )


def _check_vector(module_name, tensor, modules, config) -> str | None:
    module = modules.get(module_name)
    if module is None:
        return "the base model has no such module"
    features = _in_out(module)
    if features is None:
        return f"{type(module).__name__} is not a layer IA3 scales"
    fan_in, fan_out = features
    feedforward = _is_feedforward(module_name, config.get("feedforward_modules"))
    expected = fan_in if feedforward else fan_out
    non_one = [d for d in tensor.shape if d != 1]
    if tensor.numel() != expected or len(non_one) > 1:
        role = "feedforward (input)" if feedforward else "output"
        return f"shape {tuple(tensor.shape)} does not match the layer's {role} size {expected}"
    if tensor.dim() == 2 and tensor.shape != ((1, fan_in) if feedforward else (fan_out, 1)):
        return f"shape {tuple(tensor.shape)} has the wrong orientation"
    return None


def _check_head(name, tensor, params, num_labels) -> str | None:
    # Saved heads (modules_to_save) appear under the plain parameter name.
    name = name.replace(".modules_to_save", "")
    param = params.get(name)
    if param is None:
        return "the base model has no such parameter"
    if tuple(param.shape) == tuple(tensor.shape):
        return None
    # A classifier head may have another number of labels than the base config says.
    if num_labels and param.shape[0] == num_labels and param.shape[1:] == tensor.shape[1:]:
        return None
    return f"shape {tuple(tensor.shape)} differs from the model's {tuple(param.shape)}"


_TASK_CLASSES = {
    "SEQ_CLS": "AutoModelForSequenceClassification",
    "CAUSAL_LM": "AutoModelForCausalLM",
    "SEQ_2_SEQ_LM": "AutoModelForSeq2SeqLM",
    "TOKEN_CLS": "AutoModelForTokenClassification",
}


def base_source(name: str) -> str:
    """A local folder or Hub id for `name`, using the engine's aliases (e.g. `minilm`)."""
    return resolve_model_path(name)


def meta_model(base_name: str, task_type: str | None, num_labels: int | None = None):
    """The base model's architecture on the meta device: shapes without loading weights."""
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(base_source(base_name))
    except Exception as exc:  # transformers raises OSError, ValueError, HF errors...
        raise AdapterFileError(
            f"Cannot check the adapter against base model '{base_name}': its config could not "
            f"be loaded ({str(exc).splitlines()[0]}). Pass --base-model with a local model "
            "folder or a Hub id that is available offline."
        ) from exc
    if num_labels:
        config.num_labels = num_labels
    model_class = getattr(transformers, _TASK_CLASSES.get(task_type or "", "AutoModel"))
    with torch.device("meta"):
        return model_class.from_config(config)
