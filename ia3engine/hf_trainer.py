"""IA3Trainer: transformers' Trainer for an IA3Model, saving and resuming only the adapter.

A plain `transformers.Trainer` decides what to save by `isinstance(model, (PreTrainedModel,
PeftModel))`; any other nn.Module (IA3Model included) gets its whole `state_dict()` written to
model.safetensors in every checkpoint and final save, the frozen base with it, and is resumed
with `load_state_dict`. It also reads the columns to keep, the label names and whether the model
takes loss keywords from the class it was given, so with IA3Model's `forward(*args, **kwargs)`
the default `remove_unused_columns=True` drops every input column. Only PEFT's own classes get
the base model looked at instead.

IA3Trainer is that Trainer with the model-specific steps pointed at the adapter:
- `_save` (final save_model and every checkpoint-N) writes what IA3Model.save_pretrained writes
  (adapter_model.safetensors + adapter_config.json, PEFT's layout), the tokenizer/processor and
  training_args.bin, never the base;
- `_load_from_checkpoint` (resume_from_checkpoint) and `_load_best_model`
  (load_best_model_at_end) copy the saved vectors back into the model's own adapters;
- columns, label names, `can_return_loss` and loss keywords come from the base model.
Everything else (optimizer over the trainable vectors, schedule, RNG state, trainer_state.json,
checkpoint rotation) is the Trainer's own.

transformers stays out of module level (it is heavy, and ruff bans it here): the class is
built on first use, `from ia3engine.hf_trainer import IA3Trainer`.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os

import torch

from ia3engine import io
from ia3engine.errors import AdapterError, AdapterFileError
from ia3engine.model import IA3Model

logger = logging.getLogger(__name__)


def __getattr__(name: str):
    if name == "IA3Trainer":
        return trainer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_checkpoint_adapters(model: IA3Model, folder) -> list[str]:
    """Copy the adapters saved in `folder` (PEFT's layout) into `model`'s adapters of the same
    names; returns the names loaded. The active adapters must all be there."""
    if model.merged_adapters:
        raise AdapterError(
            "The model's adapters are merged; call model.unmerge() before loading a checkpoint."
        )
    loaded = []
    for name in model.peft_config:
        weights = io.adapter_folder(folder, name) / io.WEIGHTS_NAME
        if weights.is_file():
            io.copy_into_adapter(model, name, io.read_tensors(weights.parent))
            loaded.append(name)
    missing = [n for n in model.active_adapters if n not in loaded]
    if missing:
        raise AdapterFileError(
            f"{folder} holds no {io.WEIGHTS_NAME} for adapter(s) {missing}. Resume from a "
            "checkpoint-N folder written by IA3Trainer for this model (a plain Trainer's "
            "model.safetensors holds the whole model instead)."
        )
    logger.info("Loaded adapter(s) %s from %s", loaded, folder)
    return loaded


def _accepts_loss_kwargs(model) -> bool:
    """Trainer's own rule, applied to the base model: its flag, else a **kwargs in forward."""
    if hasattr(model, "accepts_loss_kwargs"):
        return bool(model.accepts_loss_kwargs)
    parameters = inspect.signature(model.forward).parameters.values()
    return any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters)


@functools.cache
def trainer_class() -> type:
    """Build IA3Trainer (a transformers.Trainer subclass) once, importing transformers now."""
    from transformers import Trainer
    from transformers.trainer import TRAINING_ARGS_NAME
    from transformers.utils import can_return_loss, find_labels

    class IA3Trainer(Trainer):
        """transformers.Trainer for an IA3Model: trains the active adapter's vectors (and its
        modules_to_save copies); checkpoints and save_model hold only the adapter."""

        def __init__(self, model=None, args=None, *rest, **kwargs):
            super().__init__(model, args, *rest, **kwargs)
            if not isinstance(self.model, IA3Model):
                raise AdapterError(
                    f"IA3Trainer trains an IA3Model, not {type(self.model).__name__}; wrap the "
                    "base first: model = ia3engine.get_ia3_model(base, IA3Config(...))."
                )
            if self.is_deepspeed_enabled or self.is_fsdp_enabled:
                raise AdapterError(
                    "IA3Trainer saves the adapter from the model's own tensors, which DeepSpeed "
                    "and FSDP shard; train with one process or DDP (torchrun) instead."
                )
            if self.model.merged_adapters:
                raise AdapterError(
                    "The model's adapters are merged and cannot train; call model.unmerge() first."
                )
            # Trainer introspected IA3Model's forward(*args, **kwargs); PEFT's classes get the
            # base model looked at, and so does ours
            base = self.model.get_base_model()
            if self.args.label_names is None:
                self.label_names = find_labels(type(base))
            self.can_return_loss = can_return_loss(type(base))
            self.model_accepts_loss_kwargs = _accepts_loss_kwargs(base)

        def _set_signature_columns_if_needed(self):
            if self._signature_columns is None:
                base = self.model.get_base_model()
                columns = list(inspect.signature(base.forward).parameters)
                self._signature_columns = columns + sorted(
                    {"label", "label_ids", *self.label_names} - set(columns)
                )

        def _save(self, output_dir: str | None = None, state_dict=None) -> None:
            """Write the adapter(s) as IA3Model.save_pretrained does, the processor and the
            training arguments; `state_dict` (a full one from other backends) is not used."""
            output_dir = output_dir if output_dir is not None else self.args.output_dir
            if not self.args.should_save:
                return
            os.makedirs(output_dir, exist_ok=True)
            logger.info("Saving the IA3 adapter to %s", output_dir)
            model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
            model.save_pretrained(output_dir)
            tokenizer = self.processing_class
            if tokenizer is None:
                tokenizer = getattr(self.data_collator, "tokenizer", None)
            if tokenizer is not None:
                tokenizer.save_pretrained(output_dir)
            torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

        def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
            load_checkpoint_adapters(self.model, resume_from_checkpoint)

        def _load_best_model(self) -> None:
            best = self.state.best_model_checkpoint
            logger.info("Loading the best adapter from %s (%s)", best, self.state.best_metric)
            load_checkpoint_adapters(self.model, best)

    IA3Trainer.__module__ = __name__
    return IA3Trainer
