"""`train(spec)`: a dataset file and a base model in, a tested PEFT-format IA3 adapter out.

Sets up data, base, adapter and accelerate, runs the loop (train_loop.py) and writes the folder:
adapter files, the model card and training_info.json.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ia3engine.training.spec import TrainSpec

logger = logging.getLogger(__name__)

TRAINING_INFO = "training_info.json"
_PEFT_TASK = {"encoder": "SEQ_CLS", "causal": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM"}


@dataclass
class TrainResult:
    """What a finished (or stopped) run produced."""

    adapter_dir: str
    metrics: dict
    train_seconds: float
    steps: int
    stopped: bool
    labels: list[str]
    task: str
    base_model: str
    trainable_params: int
    target_modules: list[str] | str | None = None
    metrics_before: dict = field(default_factory=dict)  # step 0 evaluation, before any update


def train(
    spec: TrainSpec, on_event=None, should_stop=None, checkpoint_dir=None, base_cache=None
) -> TrainResult:
    """Train one adapter; see docs/architecture.md (Training) for the events and the result."""
    emit = _emitter(on_event)
    try:
        spec = spec.resolved().validate()
        return _run(spec, emit, should_stop, checkpoint_dir, base_cache)
    except Exception as err:
        emit("failed", message=str(err) or type(err).__name__)
        raise


def _emitter(on_event):
    main = int(os.environ.get("RANK", "0")) == 0

    def emit(kind: str, **data) -> None:
        if on_event is None or not main:
            return
        on_event({"type": kind, "time": time.time(), **data})

    return emit


def _run(spec: TrainSpec, emit, should_stop, checkpoint_dir, base_cache) -> TrainResult:
    started = time.perf_counter()
    data = spec.prepare_data()
    for note in data.warnings:
        emit("log", message=note)
    accelerator = make_accelerator(spec)
    _seed_everything(spec.seed)
    loader = base_cache.get if base_cache is not None else _load
    loaded = loader(
        spec.model,
        task=spec.task,
        num_labels=len(data.labels) or None,
        quantize=spec.quantize,
        device=accelerator.device,
        labels=data.labels or None,
    )
    setup = _build(spec, data, loaded, accelerator)
    try:
        return _train_built(
            spec, data, loaded, setup, accelerator, emit, should_stop, checkpoint_dir, started
        )
    finally:
        if base_cache is not None:
            from ia3engine.training.loading import strip_adapters

            strip_adapters(loaded.model)


def _load(model, **kwargs):
    from ia3engine.training.loading import load_base

    return load_base(model, **kwargs)


def make_accelerator(spec: TrainSpec):
    """An Accelerator on the spec's device: bf16 (else fp16) autocast on CUDA, none elsewhere."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from ia3engine.training.loading import resolve_device

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = resolve_device(spec.device) if not distributed else None
    if not distributed:
        # One process may run many jobs with different devices: start accelerate afresh.
        AcceleratorState._reset_state(reset_partial_state=True)
        if device.type == "cuda" and device.index is not None:
            torch.cuda.set_device(device.index)
    on_cuda = torch.cuda.is_available() and (device is None or device.type == "cuda")
    precision = "no"
    if on_cuda:
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    # accelerate only sets up several CPU processes (gloo) when told cpu=True
    wants_cpu = spec.device is not None and str(spec.device).startswith("cpu")
    cpu = (
        wants_cpu or (device is not None and device.type == "cpu") or not torch.cuda.is_available()
    )
    if device is not None and device.type == "mps":
        cpu = False
    return Accelerator(cpu=cpu, mixed_precision=precision)


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class _Setup:
    model: object  # IA3Model
    task: object
    params: dict
    config: object
    prompt: str | None


def _build(spec, data, loaded, accelerator) -> _Setup:
    from ia3engine.config import IA3Config
    from ia3engine.model import get_ia3_model
    from ia3engine.training.tasks import (
        DEFAULT_CHOICE_PROMPT,
        ChoiceClassify,
        EncoderClassify,
        Generate,
    )

    kind, device = loaded.kind, accelerator.device
    config = IA3Config(
        target_modules=spec.target_modules,
        feedforward_modules=spec.feedforward_modules,
        task_type=_PEFT_TASK[kind] if spec.task == "classify" or kind != "encoder" else None,
        base_model_name_or_path=portable_base_name(spec.model),
    )
    prompt = None
    if spec.task == "generate":
        task = Generate(loaded.tokenizer, spec.max_length, device, kind=kind)
    elif kind == "encoder":
        task = EncoderClassify(loaded.tokenizer, data.labels, spec.max_length, device)
    else:
        prompt = DEFAULT_CHOICE_PROMPT if spec.template is None else None
        task = ChoiceClassify(
            loaded.tokenizer, data.labels, spec.max_length, device, kind=kind, prompt=prompt
        )
    task.autocast = accelerator.autocast
    torch.manual_seed(spec.seed)
    model = get_ia3_model(loaded.model, config)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if kind == "encoder" and spec.task == "classify":
        from ia3engine.training.head import init_from_class_means

        heads = [m.modules_to_save["default"] for _, m in model.saved_modules()]
        init_from_class_means(
            model, heads, task, data.train["text"], data.train["label"], spec.seed
        )
    return _Setup(model=model, task=task, params=params, config=config, prompt=prompt)


def portable_base_name(model: str) -> str:
    """The name written into adapter files: the Hub id of the bundled MiniLM, else as given."""
    from ia3engine.training.loading import BUNDLED

    return "sentence-transformers/all-MiniLM-L6-v2" if model == BUNDLED else str(model)


def _train_built(
    spec, data, loaded, setup, accelerator, emit, should_stop, checkpoint_dir, started
) -> TrainResult:
    from ia3engine.training.loop import Loop

    if spec.batch_size % accelerator.num_processes:
        from ia3engine.errors import SpecError

        raise SpecError(
            [
                f"batch_size {spec.batch_size} does not split evenly over "
                f"{accelerator.num_processes} processes; use a multiple of {accelerator.num_processes}."
            ]
        )
    loop = Loop(
        spec, setup.task, setup.model, setup.params, data.train, data.eval, accelerator, emit
    )
    # the data is identified by its content, so a worker with another data dir can resume
    spec_dict = {**spec.to_dict(), "data_fingerprint": data.fingerprint}
    trainable = sum(p.numel() for p in setup.params.values())
    resumed = loop.resume(checkpoint_dir, spec_dict)
    emit(
        "started",
        total_steps=spec.steps,
        step=loop.state.step,
        resumed=resumed,
        trainable_params=trainable,
        device=str(accelerator.device),
        processes=accelerator.num_processes,
        train_rows=len(data.train),
        eval_rows=len(data.eval),
        labels=data.labels,
        setup_seconds=time.perf_counter() - started,
    )
    out_dir = Path(spec.out_dir)
    stopped = loop.run(should_stop, checkpoint_dir, out_dir / "checkpoint", spec_dict)
    before = {}
    if not stopped:
        before = loop.evaluate_initial()
        emit("eval", step=0, metrics=before, before=True)
        if spec.early_stopping_patience:
            loop.restore_best()  # with early stopping, the adapter is the best evaluation's
    metrics = loop.evaluate(final=True) if not stopped else dict(loop.state.last_metrics)
    if not stopped:
        emit("eval", step=loop.state.step, metrics=metrics)
    result = TrainResult(
        adapter_dir=str(out_dir),
        metrics=metrics,
        train_seconds=loop.state.train_seconds,
        steps=loop.state.step,
        stopped=stopped,
        labels=list(data.labels),
        task=spec.task,
        base_model=spec.model,
        trainable_params=trainable,
        target_modules=setup.model.peft_config["default"].target_modules,
        metrics_before=before,
    )
    if accelerator.is_main_process:
        write_adapter(result, spec, data, loaded, setup)
    accelerator.wait_for_everyone()
    emit(
        "finished",
        metrics=metrics,
        adapter_dir=str(out_dir),
        stopped=stopped,
        steps=loop.state.step,
        train_seconds=result.train_seconds,
    )
    return result


def write_adapter(result: TrainResult, spec, data, loaded, setup) -> None:
    """The adapter folder: PEFT files, README.md model card, training_info.json."""
    from ia3engine.training.card import model_card

    out = Path(result.adapter_dir)
    setup.model.save_pretrained(out)
    config_path = out / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = portable_base_name(spec.model)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))
    info = {
        "task": spec.task,
        "kind": loaded.kind,
        "labels": list(data.labels),
        "template": spec.template,
        "prompt": setup.prompt,
        "text_column": data.text_column,
        "label_column": data.label_column,
        "base_model": spec.model,
        "metrics": result.metrics,
        "metrics_before": result.metrics_before,
        "spec": spec.to_dict(),
        "steps": result.steps,
        "stopped": result.stopped,
        "train_seconds": result.train_seconds,
        "trainable_params": result.trainable_params,
        "target_modules": result.target_modules,
        "data_fingerprint": data.fingerprint,
    }
    (out / TRAINING_INFO).write_text(json.dumps(info, indent=2, default=str))
    (out / "README.md").write_text(model_card(info))
