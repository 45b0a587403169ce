"""Save and load IA3 adapters in PEFT's on-disk format, with PEFT's README.md model card.

A folder holds adapter_config.json and adapter_model.safetensors (or PEFT's legacy pickle
adapter_model.bin, read with torch's weights-only loader) with PEFT's key names
(`base_model.model.<path>.ia3_l`), so PEFT loads ours and we load PEFT's. The functions take an
IA3Model and use its public methods; `load_ia3_model` lives with IA3Model in model.py.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ia3engine.config import PEFT_VERSION, IA3Config
from ia3engine.errors import AdapterFileError
from ia3engine.wrappers import VECTOR

logger = logging.getLogger(__name__)

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_NAME = "adapter_model.bin"
CARD_NAME = "README.md"
PREFIX = "base_model.model."


def adapter_folder(save_directory, adapter_name: str) -> Path:
    """Where PEFT puts an adapter: the folder itself for 'default', else a subfolder."""
    root = Path(save_directory)
    return root if adapter_name == "default" else root / adapter_name


def adapter_tensors(model, adapter_name: str) -> dict[str, torch.nn.Parameter | torch.Tensor]:
    """PEFT key -> live tensor for one adapter: its vectors and its saved-module copies."""
    tensors = {}
    for path, layer in model.ia3_layers():
        if adapter_name in layer.ia3_l:
            tensors[f"{PREFIX}{path}.{VECTOR}"] = layer.ia3_l[adapter_name]
    for path, module in model.saved_modules():
        if adapter_name in module.modules_to_save:
            for key, value in module.modules_to_save[adapter_name].state_dict().items():
                tensors[f"{PREFIX}{path}.{key}"] = value
    return tensors


def adapter_config_dict(model, adapter_name: str) -> dict:
    """The adapter_config.json content, as PEFT writes it."""
    config = model.peft_config[adapter_name]
    data = config.to_dict()
    data["inference_mode"] = True
    name_or_path = getattr(model.base_model, "name_or_path", None)
    if isinstance(name_or_path, str) and name_or_path:
        data["base_model_name_or_path"] = name_or_path
    if config.task_type is None:
        base_class = type(model.base_model)
        data["auto_mapping"] = {
            "base_model_class": base_class.__name__,
            "parent_library": base_class.__module__,
        }
    return data


def save_adapters(
    model,
    save_directory,
    selected_adapters: list[str] | None = None,
    *,
    safe_serialization: bool = True,
    is_main_process: bool = True,
) -> None:
    """Write each selected adapter (default: all) in PEFT's layout, and a model card.

    safe_serialization=False writes PEFT's legacy adapter_model.bin (torch.save) instead of
    safetensors; a process other than the main one writes nothing (DDP ranks).
    """
    root = Path(save_directory)
    if root.is_file():
        raise AdapterFileError(
            f"save_pretrained needs a folder, but {root} is a file; pass a folder path."
        )
    names = list(model.peft_config) if selected_adapters is None else list(selected_adapters)
    model.check_known(names)
    if not is_main_process:
        return
    root.mkdir(parents=True, exist_ok=True)
    write_model_card(model, root, names)
    weights_name = WEIGHTS_NAME if safe_serialization else PICKLE_NAME
    for name in names:
        folder = adapter_folder(root, name)
        folder.mkdir(parents=True, exist_ok=True)
        # contiguous CPU copies: safetensors refuses views and shared storage (tied weights)
        tensors = {
            key: value.detach().to("cpu", copy=True).contiguous()
            for key, value in adapter_tensors(model, name).items()
        }
        if safe_serialization:
            save_file(tensors, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
        else:
            torch.save(tensors, folder / PICKLE_NAME)
            if (folder / WEIGHTS_NAME).is_file():
                logger.warning(
                    "%s also holds an older %s, which loaders (PEFT's and ours) read before the "
                    "new %s; delete it to load the new weights.",
                    folder,
                    WEIGHTS_NAME,
                    PICKLE_NAME,
                )
        with open(folder / CONFIG_NAME, "w", encoding="utf-8") as handle:
            json.dump(adapter_config_dict(model, name), handle, indent=2, sort_keys=True)
        logger.info(
            "Saved adapter '%s' (%d tensors) to %s", name, len(tensors), folder / weights_name
        )


def write_model_card(model, folder: Path, names: list[str]) -> None:
    """PEFT's README.md: front matter (library_name, base_model, pipeline_tag, tags) and a short
    body. An existing README.md (e.g. training's fuller card) is left as it is."""
    path = Path(folder) / CARD_NAME
    if path.exists():
        return
    base = model.base_model
    name_or_path = getattr(base, "name_or_path", None)
    name_or_path = name_or_path if isinstance(name_or_path, str) and name_or_path else None
    tags = set(getattr(base, "model_tags", None) or []) | {"ia3"}
    if any(cls.__name__ == "PreTrainedModel" for cls in type(base).__mro__):
        tags.add("transformers")
    front = ["---"]
    if name_or_path:
        front.append(f"base_model: {json.dumps(name_or_path)}")
        tags.add(f"base_model:adapter:{name_or_path}")
    front.append("library_name: peft")
    if names and model.peft_config[names[0]].task_type == "CAUSAL_LM":  # PEFT's one certain tag
        front.append("pipeline_tag: text-generation")
    front += ["tags:"] + [f"- {json.dumps(tag)}" for tag in sorted(tags)] + ["---", ""]
    about = f"`{name_or_path}`" if name_or_path else f"a `{type(base).__name__}` model"
    subfolders = [n for n in names if n != "default"]
    body = [
        f"# (IA)^3 adapter for {name_or_path or type(base).__name__}",
        "",
        f"(IA)^3 adapter(s) {', '.join(f'`{n}`' for n in names)} for {about}, saved by "
        "ia3engine in PEFT's format"
        + (f" (subfolders: {', '.join(subfolders)})." if subfolders else "."),
        "",
        "## How to load",
        "",
        "```python",
        "from peft import PeftModel",
        "",
        'model = PeftModel.from_pretrained(base_model, "path/to/this/folder")',
        "# or: from ia3engine import load_ia3_model; model = load_ia3_model(base_model, folder)",
        "```",
        "",
        "### Framework versions",
        "",
        f"- PEFT {PEFT_VERSION} (file format; written by ia3engine)",
        "",
    ]
    path.write_text("\n".join(front + body), encoding="utf-8")


def read_config(folder) -> IA3Config:
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise AdapterFileError(
            f"No {CONFIG_NAME} in {folder}. Point to a folder written by save_pretrained "
            "(ours or PEFT's); a non-default adapter sits in a subfolder named after it."
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise AdapterFileError(f"{path} is not valid JSON ({err}); re-save the adapter.") from err
    return IA3Config.from_dict(data)


def read_tensors(folder) -> dict[str, torch.Tensor]:
    """The adapter's tensors with PEFT's `base_model.model.` prefix removed.

    adapter_model.safetensors is preferred; PEFT's legacy adapter_model.bin is read only with
    torch's weights-only unpickler, which refuses anything but tensors and plain containers.
    """
    folder = Path(folder)
    path = folder / WEIGHTS_NAME
    if path.is_file():
        tensors = load_file(str(path))
    elif (folder / PICKLE_NAME).is_file():
        tensors = _read_pickle(folder / PICKLE_NAME)
    else:
        raise AdapterFileError(
            f"No {WEIGHTS_NAME} (or legacy {PICKLE_NAME}) in {folder}; re-save the adapter there."
        )
    return {k[len(PREFIX) :] if k.startswith(PREFIX) else k: v for k, v in tensors.items()}


def _read_pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        raise AdapterFileError(
            f"{path} could not be read as a weights-only pickle ({str(err).splitlines()[0]}). "
            "It may hold code or objects other than tensors, which are never unpickled here; "
            "re-save the adapter as safetensors (save_pretrained(..., safe_serialization=True))."
        ) from err
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items()
    ):
        raise AdapterFileError(
            f"{path} does not hold a dict of named tensors (an adapter state dict); re-save the "
            "adapter with save_pretrained."
        )
    return data


def copy_into_adapter(model, adapter_name: str, tensors: dict[str, torch.Tensor]) -> None:
    """Check every tensor against the model, then copy all of them (nothing on error)."""
    live = {k[len(PREFIX) :]: v for k, v in adapter_tensors(model, adapter_name).items()}
    unexpected = sorted(set(tensors) - set(live))
    if unexpected:
        raise AdapterFileError(
            f"The adapter file has tensors the model has no place for: {unexpected[:5]}"
            f"{' ...' if len(unexpected) > 5 else ''}. It was probably trained on a different "
            "base model; load it onto the model named in its adapter_config.json."
        )
    for key, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(live[key].shape):
            raise AdapterFileError(
                f"Tensor '{key}' has shape {tuple(tensor.shape)} in the file but "
                f"{tuple(live[key].shape)} in the model. The adapter was probably trained on a "
                "different base model (or with other feedforward_modules); load it onto the "
                "model named in its adapter_config.json."
            )
    missing = sorted(set(live) - set(tensors))
    if missing:
        logger.warning("Adapter file lacks %d tensors, left at init: %s", len(missing), missing)
    with torch.no_grad():
        for key, tensor in tensors.items():
            live[key].copy_(tensor)


def read_adapter(folder, is_trainable: bool = False) -> tuple[IA3Config, dict[str, torch.Tensor]]:
    """The config (frozen unless is_trainable) and the tensors of the adapter in `folder`."""
    config = dataclasses.replace(read_config(folder), inference_mode=not is_trainable)
    return config, read_tensors(folder)


def load_adapter(model, folder, adapter_name: str, is_trainable: bool = False) -> None:
    """Add `adapter_name` to an IA3Model from a folder; inactive until set_adapter."""
    config, tensors = read_adapter(folder, is_trainable)
    model.add_adapter(adapter_name, config)
    try:
        copy_into_adapter(model, adapter_name, tensors)
    except Exception:
        model.delete_adapter(adapter_name)
        raise
