"""IA3Model: IA3 adapters injected into a base model in place, and everything done with them.

Owns adapter bookkeeping (add, activate, delete, disable), mixed-adapter forwards, merging,
unloading (also of a base whose IA3Model is gone) and parameter counts. The math lives in
layers.py; files (io.py) and weighted mixes (mixing.py) are handed the model and use only its
public methods, so the arrows point from here down.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ia3engine import io, mixing
from ia3engine.config import IA3Config
from ia3engine.errors import AdapterError, MergeError
from ia3engine.layers import IA3Layer, final_merge_message
from ia3engine.routing import BASE, RowRouting, route_rows
from ia3engine.saved_modules import SavedModule
from ia3engine.targets import resolve_targets, saved_module_names
from ia3engine.wrappers import param_count, replace_module, wrap_layer

logger = logging.getLogger(__name__)

# PEFT saves the classifier of a sequence-classification model with every adapter.
_SEQ_CLS_HEADS = ["classifier", "score"]


class IA3Model(nn.Module):
    """A base model with IA3 adapters. `base_model` is the original model, changed in place."""

    def __init__(self, base_model: nn.Module, config: IA3Config, adapter_name: str = "default"):
        super().__init__()
        self.base_model = base_model
        self.peft_config: dict[str, IA3Config] = {}
        self.active_adapters: list[str] = []
        self.merged_adapters: list[str] = []
        base_model.requires_grad_(False)
        self.add_adapter(adapter_name, config)

    # ---- what users of the base model need ------------------------------------------------
    @property
    def config(self):
        """The base model's (transformers) config."""
        return self.base_model.config

    @property
    def device(self) -> torch.device:
        return next(self.base_model.parameters()).device

    def get_base_model(self) -> nn.Module:
        return self.base_model

    def forward(self, *args, adapter_names: list[str] | None = None, **kwargs):
        """The base model's forward; `adapter_names` gives one adapter per row of the batch."""
        with route_rows(self._routing(adapter_names)):
            return self.base_model(*args, **kwargs)

    def generate(self, *args, adapter_names: list[str] | None = None, **kwargs):
        with route_rows(self._routing(adapter_names)):
            return self.base_model.generate(*args, **kwargs)

    def _routing(self, adapter_names: list[str] | None) -> RowRouting | None:
        if adapter_names is None:
            return None
        if isinstance(adapter_names, str):
            raise AdapterError("adapter_names must be a list with one adapter name per row.")
        unknown = sorted({n for n in adapter_names if n != BASE and n not in self.peft_config})
        if unknown:
            raise AdapterError(
                f"Unknown adapter(s) in adapter_names: {unknown}. Known: "
                f"{sorted(self.peft_config)}; use '{BASE}' for rows without an adapter."
            )
        if self.merged_adapters:
            raise AdapterError(
                "A mixed-adapter batch needs unmerged adapters; call model.unmerge() first."
            )
        if torch.is_grad_enabled() and getattr(self.base_model, "is_gradient_checkpointing", False):
            # checkpointed blocks recompute their forward in backward, outside this call's
            # row routing, so the gradients would silently come from the active adapters
            raise AdapterError(
                "Mixed-adapter batches cannot train with gradient checkpointing; call "
                "model.base_model.gradient_checkpointing_disable() or train one adapter per batch."
            )
        return RowRouting.from_names(list(adapter_names), device=self.device)

    # ---- modules ---------------------------------------------------------------------------
    def ia3_layers(self) -> Iterator[tuple[str, IA3Layer]]:
        """(path in the base model, layer) for every IA3 wrapper."""
        for name, module in self.base_model.named_modules():
            if isinstance(module, IA3Layer):
                yield name, module

    def saved_modules(self) -> Iterator[tuple[str, SavedModule]]:
        for name, module in self.base_model.named_modules():
            if isinstance(module, SavedModule):
                yield name, module

    # ---- adapters --------------------------------------------------------------------------
    def add_adapter(self, adapter_name: str, config: IA3Config) -> None:
        """Inject a new adapter; the first one becomes active and trainable, later ones not."""
        self.check_new_name(adapter_name)
        if config.task_type == "SEQ_CLS":
            extra = [n for n in _SEQ_CLS_HEADS if n not in (config.modules_to_save or [])]
            config = dataclasses.replace(
                config, modules_to_save=list(config.modules_to_save or []) + extra
            )
        targets, resolved = resolve_targets(self.base_model, config)
        # layers pick their weight layout from their type; the saved flag says what PEFT's
        # would (it ends up as the last target's: True for Conv1D)
        resolved.fan_in_fan_out = targets[-1].layer_type == "Conv1D"
        for target in targets:
            layer = target.module
            if not isinstance(layer, IA3Layer):
                layer = wrap_layer(layer, target.name)
                layer.active_adapters = list(self.active_adapters)
                layer.disabled = any(m.disabled for _, m in self.ia3_layers())
                replace_module(self.base_model, target.name, layer)
            layer.add_adapter(adapter_name, target.feedforward, config.init_ia3_weights)
            layer.ia3_l[adapter_name].requires_grad_(False)
        self.add_saved_modules(adapter_name, config.modules_to_save)
        self.peft_config[adapter_name] = resolved
        if not self.active_adapters:
            self.set_adapter(adapter_name)

    def add_saved_modules(self, adapter_name: str, spec, sources=None) -> None:
        """Give `adapter_name` its own trainable copy of each module `spec` names (frozen until
        set_adapter); `sources` maps a path to the module the copy starts from."""
        for name in saved_module_names(self.base_model, spec):
            module = self.base_model.get_submodule(name)
            if isinstance(module, IA3Layer):
                raise AdapterError(
                    f"Module '{name}' is scaled by IA3 and cannot also be in modules_to_save; "
                    "remove it from one of target_modules or modules_to_save."
                )
            if not isinstance(module, SavedModule):
                module = SavedModule(module)
                replace_module(self.base_model, name, module)
            module.add_adapter(adapter_name, (sources or {}).get(name))
            module.modules_to_save[adapter_name].requires_grad_(False)

    def set_adapter(self, adapter_name: str | list[str]) -> None:
        """Activate adapters (their scales multiply) and make only them trainable."""
        names = [adapter_name] if isinstance(adapter_name, str) else list(adapter_name)
        self.check_known(names)
        for _, module in self.saved_modules():
            module.check_active(names)  # before anything changes
        if self.merged_adapters:
            logger.warning("Adapters are merged; unmerging them before switching adapters.")
            self.unmerge()
        trainable = {n for n in names if not self.peft_config[n].inference_mode}
        for _, layer in self.ia3_layers():
            layer.active_adapters = list(names)
            for name, vector in layer.ia3_l.items():
                vector.requires_grad_(name in trainable)
        for _, module in self.saved_modules():
            module.set_adapter(names, trainable)
        self.active_adapters = names

    def delete_adapter(self, adapter_name: str) -> None:
        self.check_known([adapter_name])
        if adapter_name in self.merged_adapters:
            raise AdapterError(
                f"Adapter '{adapter_name}' is merged; call model.unmerge() before deleting it."
            )
        for name, layer in list(self.ia3_layers()):
            layer.delete_adapter(adapter_name)
            if not layer.ia3_l:  # no adapter left here: give the base layer its place back
                replace_module(self.base_model, name, layer.base_layer)
        for name, module in list(self.saved_modules()):
            module.delete_adapter(adapter_name)
            if not module.modules_to_save:
                replace_module(self.base_model, name, module.original_module)
        del self.peft_config[adapter_name]
        remaining = [n for n in self.active_adapters if n != adapter_name]
        if not remaining and self.peft_config:
            remaining = [next(iter(self.peft_config))]
        self.active_adapters = []
        if remaining:
            self.set_adapter(remaining)

    @contextmanager
    def disable_adapters(self) -> Iterator[None]:
        """Run the bare base model inside the block; merged adapters come back on exit."""
        merged = list(self.merged_adapters)
        if merged:
            self.unmerge()  # exact, so re-merging on exit gives the same weights bit for bit
        modules = [m for _, m in self.ia3_layers()] + [m for _, m in self.saved_modules()]
        previous = [m.disabled for m in modules]
        for module in modules:
            module.disabled = True
        try:
            yield
        finally:
            for module, was in zip(modules, previous, strict=True):
                module.disabled = was
            if merged:
                self.merge(merged)

    def check_known(self, names: list[str]) -> None:
        """Raise AdapterError naming every one of `names` this model does not have."""
        unknown = [n for n in names if n not in self.peft_config]
        if unknown:
            raise AdapterError(
                f"Unknown adapter(s) {unknown}; this model has {sorted(self.peft_config)}."
            )

    def check_new_name(self, name: str) -> None:
        """Raise AdapterError if `name` cannot name a new adapter here."""
        if not isinstance(name, str) or not name or "." in name or name == BASE:
            raise AdapterError(
                f"Adapter name {name!r} is not usable: use a non-empty name without dots, "
                f"other than '{BASE}'."
            )
        if name in self.peft_config:
            raise AdapterError(
                f"An adapter named '{name}' already exists; pick another name or delete it first."
            )

    # ---- merging ---------------------------------------------------------------------------
    def merge(
        self,
        adapter_names: list[str] | None = None,
        safe_merge: bool = False,
        keep_original: bool = True,
    ) -> None:
        """Fold adapters (default: the active ones) into the base weights.

        With safe_merge every layer is checked for NaN/inf before any weight changes.
        keep_original (default) keeps a copy of each targeted weight for an exact unmerge():
        +100% of the targeted weights (quantized bases: their int8/4-bit parameter). False
        makes the merge final and keeps nothing (an earlier merge's copy is dropped too);
        unmerge() then raises MergeError.
        """
        names = [adapter_names] if isinstance(adapter_names, str) else adapter_names
        names = list(self.active_adapters if names is None else names)
        self.check_known(names)
        for name in [n for n in names if n in self.merged_adapters]:
            logger.warning("Adapter '%s' is already merged; nothing to do for it.", name)
        names = [n for n in names if n not in self.merged_adapters]
        if not names and keep_original:
            return
        layers = [layer for _, layer in self.ia3_layers()]
        if safe_merge:
            for layer in layers:
                layer.merge(names, safe_merge=True, commit=False)
        for layer in layers:  # with nothing new to merge, keep_original=False drops the copies
            layer.merge(names, keep_original=keep_original)
        self.merged_adapters.extend(names)

    def unmerge(self) -> None:
        """Restore the base weights exactly as they were before the first merge."""
        if not self.merged_adapters:
            logger.warning("Already unmerged. Nothing to do.")
            return
        _check_can_unmerge(self.base_model)
        for _, layer in self.ia3_layers():
            layer.unmerge()
        self.merged_adapters.clear()

    def merge_and_unload(
        self, adapter_names: list[str] | None = None, safe_merge: bool = False
    ) -> nn.Module:
        """Merge, then return the bare base model (Conv1D stays Conv1D); adapters are gone.

        The merge is final (keep_original=False): no copy of the weights is made on the way.
        """
        self.merge(adapter_names, safe_merge=safe_merge, keep_original=False)
        unload_adapters(self.base_model, keep_merged=True)
        return self._forget_adapters()

    def unload(self) -> nn.Module:
        """Return the original base model, unmerged, without any adapter."""
        unload_adapters(self.base_model)
        return self._forget_adapters()

    def _forget_adapters(self) -> nn.Module:
        self.peft_config = {}
        self.active_adapters, self.merged_adapters = [], []
        return self.base_model

    # ---- mixing, files, counts -------------------------------------------------------------
    def add_weighted_adapter(
        self, adapters: list[str], weights: list[float], adapter_name: str
    ) -> None:
        """New adapter with vector sum(w_i * l_i); an adapter absent from a module counts as 1."""
        mixing.add_weighted_adapter(self, list(adapters), list(weights), adapter_name)

    def save_pretrained(self, save_directory, selected_adapters: list[str] | None = None) -> None:
        io.save_adapters(self, save_directory, selected_adapters)

    def load_adapter(self, folder, adapter_name: str, is_trainable: bool = False) -> None:
        io.load_adapter(self, folder, adapter_name, is_trainable=is_trainable)

    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """(trainable, all) parameter counts, counted like PEFT (4-bit packs two per byte)."""
        trainable = total = 0
        for param in self.parameters():
            count = param_count(param)
            total += count
            trainable += count if param.requires_grad else 0
        return trainable, total

    def print_trainable_parameters(self) -> None:
        """Print PEFT's line: trainable params: N || all params: M || trainable%: P."""
        trainable, total = self.get_nb_trainable_parameters()
        # the method's whole purpose is this line on stdout, as in PEFT
        print(
            f"trainable params: {trainable:,d} || all params: {total:,d} || "
            f"trainable%: {100 * trainable / total:.4f}"
        )


def get_ia3_model(
    base_model: nn.Module, config: IA3Config, adapter_name: str = "default"
) -> IA3Model:
    """Inject an IA3 adapter into `base_model` (in place) and return the wrapping IA3Model."""
    return IA3Model(base_model, config, adapter_name)


def load_ia3_model(
    base_model: nn.Module, folder, adapter_name: str = "default", is_trainable: bool = False
) -> IA3Model:
    """Wrap `base_model` with the adapter saved in `folder` (ours or PEFT's)."""
    config, tensors = io.read_adapter(folder, is_trainable)
    model = IA3Model(base_model, config, adapter_name)
    try:
        io.copy_into_adapter(model, adapter_name, tensors)
    except Exception:
        model.unload()  # give the caller its base model back untouched
        raise
    logger.info("Loaded adapter '%s' from %s", adapter_name, folder)
    return model


def unload_adapters(base_model: nn.Module, keep_merged: bool = False) -> int:
    """Give every module an adapter wrapped in `base_model` its place back; returns how many.

    IA3 layers are unmerged (keep_merged: their merge is made final instead); a saved module
    gives back its original (keep_merged: the active adapter's trained copy). It needs no
    IA3Model, so a cached base is cleaned even after the job that wrapped it failed.
    """
    wrapped = [
        (name, module)
        for name, module in base_model.named_modules()
        if isinstance(module, (IA3Layer, SavedModule))
    ]
    if not keep_merged:
        _check_can_unmerge(base_model)  # before any module is unwrapped
    for name, module in reversed(wrapped):  # innermost first: outer paths stay valid
        if isinstance(module, IA3Layer):
            if keep_merged:
                module.forget_original()
            else:
                module.unmerge()
            replace_module(base_model, name, module.base_layer)
        else:
            chosen = module.active_adapter if keep_merged else None
            replace_module(base_model, name, module.module_for(chosen))
    return len(wrapped)


def _check_can_unmerge(base_model: nn.Module) -> None:
    """Raise MergeError, changing nothing, if a layer was merged with keep_original=False."""
    for module in base_model.modules():
        if isinstance(module, IA3Layer) and module.merge_is_final:
            raise MergeError(final_merge_message(module.merged_adapters))
