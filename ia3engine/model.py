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

from ia3engine import batch_rows, io, mixing
from ia3engine.config import IA3Config
from ia3engine.errors import AdapterError, MergeError
from ia3engine.layers import IA3Layer, final_merge_message
from ia3engine.resolutions import Resolutions
from ia3engine.routing import BASE, ONE_ADAPTER_FIX, RowRouting, route_rows
from ia3engine.row_groups import install_per_adapter_forwards, remove_per_adapter_forwards
from ia3engine.saved_modules import SavedModule
from ia3engine.wrappers import outer_modules, param_count, replace_module, wrap_layer

logger = logging.getLogger(__name__)

# The head PEFT adds to modules_to_save for each task type (its PeftModelFor<Task> classes), so
# a task model's new head trains and is saved with every adapter. Names absent from a model are
# skipped ("score" on BERT, "classifier" on Llama).
TASK_HEADS: dict[str, tuple[str, ...]] = {
    "SEQ_CLS": ("classifier", "score"),
    "TOKEN_CLS": ("classifier", "score"),
    "QUESTION_ANS": ("qa_outputs",),
    "CAUSAL_LM": (),
    "SEQ_2_SEQ_LM": (),
    "FEATURE_EXTRACTION": (),
}


class IA3Model(nn.Module):
    """A base model with IA3 adapters. `base_model` is the original model, changed in place."""

    def __init__(self, base_model: nn.Module, config: IA3Config, adapter_name: str = "default"):
        super().__init__()
        self.base_model = base_model
        self.peft_config: dict[str, IA3Config] = {}
        self.active_adapters: list[str] = []
        self.merged_adapters: list[str] = []
        self._sequence_first: str | None = None  # why rows cannot be routed, if they cannot
        self._resolutions = Resolutions()  # targets per config, until the module tree changes
        base_model.requires_grad_(False)
        self.add_adapter(adapter_name, config)

    # ---- what users of the base model need ------------------------------------------------
    def __getattr__(self, name: str):
        """What IA3Model lacks comes from the base model, as in PEFT: config, dtype,
        generation_config, get_input_embeddings, gradient_checkpointing_enable, ..."""
        try:
            return super().__getattr__(name)  # parameters, buffers, submodules
        except AttributeError:
            # base_model not set yet (inside __init__): no recursion; protocol lookups such as
            # __deepcopy__ are answered for the wrapper, never by the base model
            if name == "base_model" or name.startswith("__"):
                raise
        base = self.base_model
        try:
            return getattr(base, name)
        except AttributeError:
            raise AttributeError(
                f"Neither IA3Model nor its base model ({type(base).__name__}) has an attribute "
                f"{name!r}."
            ) from None

    @property
    def device(self) -> torch.device:
        return next(self.base_model.parameters()).device

    def get_base_model(self) -> nn.Module:
        return self.base_model

    def forward(self, *args, adapter_names: list[str] | None = None, **kwargs):
        """The base model's forward; `adapter_names` gives one adapter per row of the batch."""
        with route_rows(self._routing(adapter_names, args, kwargs)):
            return self.base_model(*args, **kwargs)

    def generate(self, *args, adapter_names: list[str] | None = None, **kwargs):
        """The base model's generate; `adapter_names` gives one adapter per prompt."""
        expansion = batch_rows.generate_expansion(self.base_model, kwargs)
        with route_rows(self._routing(adapter_names, args, kwargs, expansion)):
            return self.base_model.generate(*args, **kwargs)

    def _routing(
        self, adapter_names: list[str] | None, args=(), kwargs=None, expansion: int = 1
    ) -> RowRouting | None:
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
        if torch.is_grad_enabled() and batch_rows.checkpointing(self.base_model):
            # checkpointed blocks recompute their forward in backward, outside this call's
            # row routing, so the gradients would silently come from the active adapters
            raise AdapterError(
                "Mixed-adapter batches cannot train with gradient checkpointing; call "
                "model.base_model.gradient_checkpointing_disable() or train one adapter per batch."
            )
        if self._sequence_first:
            raise AdapterError(
                f"Mixed-adapter batches cannot route this model: {self._sequence_first}, so a "
                "layer's leading dimension is not the batch and rows would be matched to the "
                "wrong adapters: " + ONE_ADAPTER_FIX + "."
            )
        replica = getattr(self, "_is_replica", False)
        expansion = batch_rows.check_batch_rows(
            len(adapter_names), args, kwargs or {}, expansion, replica
        )
        return RowRouting.from_names(list(adapter_names), device=self.device, expansion=expansion)

    # ---- modules ---------------------------------------------------------------------------
    def ia3_layers(self) -> Iterator[tuple[str, IA3Layer]]:
        """(path in the base model, layer) for every IA3 wrapper."""
        for name, module in outer_modules(self.base_model):
            if isinstance(module, IA3Layer):
                yield name, module

    def saved_modules(self) -> Iterator[tuple[str, SavedModule]]:
        for name, module in outer_modules(self.base_model):
            if isinstance(module, SavedModule):
                yield name, module

    # ---- adapters --------------------------------------------------------------------------
    def add_adapter(self, adapter_name: str, config: IA3Config) -> None:
        """Inject a new adapter; the first one becomes active and trainable, later ones not."""
        self.check_new_name(adapter_name)
        config = with_task_head(config)
        targets, resolved = self._resolutions.targets(self.base_model, config)
        # layers pick their weight layout from their type; the saved flag says what PEFT's
        # would (it ends up as the last target's: True for Conv1D)
        resolved.fan_in_fan_out = targets[-1].layer_type == "Conv1D"
        self._saved_modules_for(config.modules_to_save)  # refused before anything changes
        wrapped = False
        for target in targets:
            layer = target.module
            if not isinstance(layer, IA3Layer):
                layer = wrap_layer(layer, target.name).train(layer.training)
                layer.active_adapters = list(self.active_adapters)
                layer.disabled = any(m.disabled for _, m in self.ia3_layers())
                self._replace(target.name, layer)
                wrapped = True
            layer.add_adapter(adapter_name, target.feedforward, config.init_ia3_weights)
            layer.ia3_l[adapter_name].requires_grad_(False)
        if wrapped:  # both depend on where the IA3 layers are, so only new ones change them
            install_per_adapter_forwards(self.base_model)
            self._sequence_first = batch_rows.sequence_first(self.base_model)
        self.add_saved_modules(adapter_name, config.modules_to_save)
        self.peft_config[adapter_name] = resolved
        if not self.active_adapters:
            self.set_adapter(adapter_name)

    def add_saved_modules(self, adapter_name: str, spec, sources=None) -> None:
        """Give `adapter_name` its own trainable copy of each module `spec` names (frozen until
        set_adapter); `sources` maps a path to the module the copy starts from."""
        for name, module in self._saved_modules_for(spec):
            if not isinstance(module, SavedModule):
                module = SavedModule(module).train(module.training)
                self._replace(name, module)
            module.add_adapter(adapter_name, (sources or {}).get(name))
            module.modules_to_save[adapter_name].requires_grad_(False)

    def _saved_modules_for(self, spec) -> list[tuple[str, nn.Module]]:
        """(name, module) for each module a modules_to_save spec names; raises AdapterError,
        changing nothing, for one that is or holds a layer IA3 scales."""
        found = []
        for name in self._resolutions.saved_names(self.base_model, spec) if spec else []:
            module = self.base_model.get_submodule(name)
            if isinstance(module, IA3Layer):
                raise AdapterError(
                    f"Module '{name}' is scaled by IA3 and cannot also be in modules_to_save; "
                    "remove it from one of target_modules or modules_to_save."
                )
            if not isinstance(module, SavedModule):
                inner = [n for n, m in outer_modules(module) if isinstance(m, IA3Layer)]
                if inner:  # its copies would carry (and hide) those layers and their vectors
                    raise AdapterError(
                        f"Module '{name}' holds a layer IA3 scales ('{name}.{inner[0]}') and "
                        "cannot be in modules_to_save; remove it from modules_to_save or "
                        "target layers outside it."
                    )
            found.append((name, module))
        return found

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
                self._replace(name, layer.base_layer)
        for name, module in list(self.saved_modules()):
            module.delete_adapter(adapter_name)
            if not module.modules_to_save:
                self._replace(name, module.original_module)
        del self.peft_config[adapter_name]
        remaining = [n for n in self.active_adapters if n != adapter_name]
        if not remaining and self.peft_config:
            remaining = [next(iter(self.peft_config))]
        self.active_adapters = []
        if remaining:
            self.set_adapter(remaining)

    @property
    def active_adapter(self) -> str | list[str]:
        """The active adapter's name; the list when several are active (PEFT's convention)."""
        return self.active_adapters[0] if len(self.active_adapters) == 1 else self.active_adapters

    @property
    def targeted_module_names(self) -> list[str]:
        """Paths (in the base model) of every module an adapter scales, in model order."""
        return [name for name, _ in self.ia3_layers()]

    def set_requires_grad(self, adapter_names: str | list[str], requires_grad: bool = True) -> None:
        """Turn training on (or off) for the named adapters' vectors and saved-module copies,
        active or not; other adapters keep their state."""
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        self.check_known(names)
        for _, layer in self.ia3_layers():
            for name in names:
                if name in layer.ia3_l:
                    layer.ia3_l[name].requires_grad_(requires_grad)
        for _, module in self.saved_modules():
            for name in names:
                if name in module.modules_to_save:
                    module.modules_to_save[name].requires_grad_(requires_grad)

    def disable_adapter(self):
        """PEFT's name for disable_adapters(): `with model.disable_adapter(): ...`."""
        return self.disable_adapters()

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

    def merge_adapter(
        self, adapter_names: list[str] | None = None, safe_merge: bool = False
    ) -> None:
        """PEFT's name for merge()."""
        self.merge(adapter_names, safe_merge=safe_merge)

    def unmerge_adapter(self) -> None:
        """PEFT's name for unmerge()."""
        self.unmerge()

    def merge_and_unload(
        self,
        progressbar: bool = False,
        safe_merge: bool = False,
        adapter_names: list[str] | None = None,
    ) -> nn.Module:
        """Merge, then return the bare base model (Conv1D stays Conv1D); adapters are gone.

        PEFT's signature; `progressbar` is accepted and ignored (the merge is one quick pass).
        The merge is final (keep_original=False): no copy of the weights is made on the way.
        """
        self.merge(adapter_names, safe_merge=safe_merge, keep_original=False)
        unload_adapters(self.base_model, keep_merged=True)
        return self._forget_adapters()

    def unload(self) -> nn.Module:
        """Return the original base model, unmerged, without any adapter."""
        unload_adapters(self.base_model)
        return self._forget_adapters()

    def _replace(self, name: str, module: nn.Module) -> None:
        """Put `module` at `name` in the base model; the module tree changed, so targets are
        resolved again."""
        replace_module(self.base_model, name, module)
        self._resolutions.clear()

    def _forget_adapters(self) -> nn.Module:
        self._resolutions.clear()
        self.peft_config = {}
        self.active_adapters, self.merged_adapters = [], []
        return self.base_model

    # ---- mixing, files, counts -------------------------------------------------------------
    def add_weighted_adapter(
        self, adapters: list[str], weights: list[float], adapter_name: str
    ) -> None:
        """New adapter with vector sum(w_i * l_i); an adapter absent from a module counts as 1."""
        mixing.add_weighted_adapter(self, list(adapters), list(weights), adapter_name)

    def save_pretrained(
        self,
        save_directory,
        safe_serialization: bool = True,
        selected_adapters: list[str] | None = None,
        save_embedding_layers: str | bool = "auto",
        is_main_process: bool = True,
        **kwargs,
    ) -> None:
        """Write the adapters (default: all) in PEFT's layout, plus a README.md model card
        unless one is there. safe_serialization=False writes adapter_model.bin (a pickle, as
        PEFT does); only the main process writes. IA3 never targets embeddings, so
        `save_embedding_layers` changes nothing; other PEFT keywords are ignored."""
        if kwargs:
            logger.info(
                "save_pretrained ignores %s (PEFT options IA3 has no use for)", sorted(kwargs)
            )
        io.save_adapters(
            self,
            save_directory,
            selected_adapters,
            safe_serialization=safe_serialization,
            is_main_process=is_main_process,
        )

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


def with_task_head(config: IA3Config) -> IA3Config:
    """`config` with its task type's heads (TASK_HEADS) added to modules_to_save."""
    saved = list(config.modules_to_save or [])
    extra = [name for name in TASK_HEADS.get(config.task_type, ()) if name not in saved]
    if not extra:
        return config
    return dataclasses.replace(config, modules_to_save=saved + extra)


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
    remove_per_adapter_forwards(base_model)
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
