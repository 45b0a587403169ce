"""Save and load IA3 adapters in PEFT's on-disk format.

A folder holds adapter_config.json and adapter_model.safetensors with PEFT's key names
(`base_model.model.<path>.ia3_l`), so PEFT loads ours and we load PEFT's. The functions take an
IA3Model and use its public methods; `load_ia3_model` lives with IA3Model in model.py.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ia3engine.config import IA3Config
from ia3engine.errors import AdapterFileError
from ia3engine.wrappers import VECTOR

logger = logging.getLogger(__name__)

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_NAME = "adapter_model.bin"
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


def save_adapters(model, save_directory, selected_adapters: list[str] | None = None) -> None:
    """Write each selected adapter (default: all) in PEFT's layout."""
    names = list(model.peft_config) if selected_adapters is None else list(selected_adapters)
    model.check_known(names)
    for name in names:
        folder = adapter_folder(save_directory, name)
        folder.mkdir(parents=True, exist_ok=True)
        # contiguous CPU copies: safetensors refuses views and shared storage (tied weights)
        tensors = {
            key: value.detach().to("cpu", copy=True).contiguous()
            for key, value in adapter_tensors(model, name).items()
        }
        save_file(tensors, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
        with open(folder / CONFIG_NAME, "w", encoding="utf-8") as handle:
            json.dump(adapter_config_dict(model, name), handle, indent=2, sort_keys=True)
        logger.info("Saved adapter '%s' (%d tensors) to %s", name, len(tensors), folder)


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
    """The adapter's tensors with PEFT's `base_model.model.` prefix removed; safetensors only."""
    folder = Path(folder)
    path = folder / WEIGHTS_NAME
    if not path.is_file():
        if (folder / PICKLE_NAME).is_file():
            raise AdapterFileError(
                f"{folder} holds only {PICKLE_NAME}, a pickle file. Loading a pickle can run "
                "arbitrary code, so it is refused. Re-save the adapter as safetensors (PEFT: "
                "save_pretrained(..., safe_serialization=True))."
            )
        raise AdapterFileError(f"No {WEIGHTS_NAME} in {folder}; re-save the adapter there.")
    tensors = load_file(str(path))
    return {k[len(PREFIX) :] if k.startswith(PREFIX) else k: v for k, v in tensors.items()}


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
