"""`train(spec)`: a dataset file and a base model in, a tested PEFT-format IA3 adapter out.

Reads top to bottom: prepare (data, accelerate, seed, base), build (task, adapter, head), train
(loop.py), then the folder: adapter files, the model card and training_info.json.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ia3engine.config import IA3Config
from ia3engine.data.dataset import PreparedData, prepare_dataset
from ia3engine.errors import SpecError
from ia3engine.model import IA3Model, get_ia3_model
from ia3engine.training import insights
from ia3engine.training.card import model_card
from ia3engine.training.head import init_from_class_means
from ia3engine.training.label_prior import NAME_FRAME, label_rows_if_meaningful, readable_name
from ia3engine.training.loading import (
    PEFT_TASK_TYPE,
    BaseCache,
    LoadedBase,
    load_base,
    portable_base_name,
    resolve_device,
)
from ia3engine.training.loop import Loop, columns_with
from ia3engine.training.pooling import sentence_pooling
from ia3engine.training.spec import TrainSpec
from ia3engine.training.tasks import DEFAULT_CHOICE_PROMPT, Task, make_task

logger = logging.getLogger(__name__)

TRAINING_INFO = "training_info.json"


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
    insights: dict | None = None  # validation insights before and after (training/insights.py)
    insights_note: str | None = None  # why there are none


@dataclass
class Run:
    """One call of train(): what it was given, and what each step builds for the next."""

    spec: TrainSpec  # resolved and validated
    emit: Callable[..., None]
    should_stop: Callable[[], bool] | None
    checkpoint_dir: str | None
    base_cache: BaseCache | None
    started: float = field(default_factory=time.perf_counter)
    # prepare()
    data: PreparedData | None = None
    accelerator: Any = None  # accelerate.Accelerator (imported only where it is made)
    loaded: LoadedBase | None = None
    # build()
    task: Task | None = None
    model: IA3Model | None = None
    params: dict[str, torch.nn.Parameter] = field(default_factory=dict)  # the trainable ones
    prompt: str | None = None  # the choice prompt generative classifiers were trained with
    extra_rows: dict | None = None  # rows the recipe trains on beside the data (label names)
    label_rows_note: str | None = None  # what the names' zero-shot reading found


def train(
    spec: TrainSpec, on_event=None, should_stop=None, checkpoint_dir=None, base_cache=None
) -> TrainResult:
    """Train one adapter; see docs/architecture.md (Training) for the events and the result."""
    emit = _emitter(on_event)
    try:
        run = Run(spec.resolved().validate(), emit, should_stop, checkpoint_dir, base_cache)
        prepare(run)
        build(run)
        try:
            return train_and_save(run)
        finally:
            if base_cache is not None:
                run.model.unload()  # the cached base goes back to the next job bare
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


def prepare(run: Run) -> None:
    """Data first (a bad file fails before any model loads), then accelerate, seeds, the base."""
    spec = run.spec
    run.data = prepare_dataset(**spec.data_options())
    for note in run.data.warnings:
        run.emit("log", message=note)
    steps = spec.steps_for(len(run.data.train))
    if steps < spec.steps:
        run.emit(
            "log",
            message=f"Training {steps} steps, not {spec.steps}: that is {spec.max_epochs:g} "
            f"passes over the {len(run.data.train)} training rows (max_epochs).",
        )
        run.spec = spec = dataclasses.replace(spec, steps=steps)
    run.accelerator = make_accelerator(spec)
    _seed_everything(spec.seed)
    load = run.base_cache.get if run.base_cache is not None else load_base
    run.loaded = load(
        spec.model,
        task=spec.task,
        num_labels=len(run.data.labels) or None,
        quantize=spec.quantize,
        device=run.accelerator.device,
        labels=run.data.labels or None,
    )


def make_accelerator(spec: TrainSpec):
    """An Accelerator on the spec's device: bf16 (else fp16) autocast on CUDA, none elsewhere."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

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
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build(run: Run) -> None:
    """The task (batches, loss), the adapter on the base, and the start of a new head."""
    spec, data, kind = run.spec, run.data, run.loaded.kind
    run.task, run.prompt = _make_task(run)
    run.task.autocast = run.accelerator.autocast
    if run.task.max_length < spec.max_length:
        run.emit(
            "log",
            message=f"Texts are cut at {run.task.max_length} tokens, the most this model reads "
            f"at once (max_length asks for {spec.max_length}).",
        )
    config = IA3Config(
        target_modules=spec.target_modules,
        feedforward_modules=spec.feedforward_modules,
        task_type=PEFT_TASK_TYPE[kind] if spec.task == "classify" or kind != "encoder" else None,
        base_model_name_or_path=portable_base_name(spec.model),
    )
    torch.manual_seed(spec.seed)
    run.model = get_ia3_model(run.loaded.model, config)
    run.params = {n: p for n, p in run.model.named_parameters() if p.requires_grad}
    if kind == "encoder" and spec.task == "classify":
        pooling = sentence_pooling(run.loaded.path)
        run.task.use_pairs(spec.pair_weight, pooling)
        if spec.label_rows:
            run.extra_rows, run.label_rows_note = label_rows_if_meaningful(
                run.model, run.task, data.train["text"], data.train["label"], data.labels, spec.seed
            )
        rows = columns_with(data.train, run.extra_rows)
        heads = [m.modules_to_save["default"] for _, m in run.model.saved_modules()]
        init_from_class_means(
            run.model, heads, run.task, rows["text"], rows["label"], spec.seed, pooling
        )


def _make_task(run: Run) -> tuple[Task, str | None]:
    """The task for this spec and base kind, and the choice prompt it uses (if any)."""
    spec, kind = run.spec, run.loaded.kind
    choices = spec.task == "classify" and kind != "encoder"
    prompt = DEFAULT_CHOICE_PROMPT if choices and spec.template is None else None
    task = make_task(
        spec.task,
        kind,
        run.loaded.tokenizer,
        run.data.labels,
        spec.max_length,
        run.accelerator.device,
        prompt,
    )
    return task, prompt


def train_and_save(run: Run) -> TrainResult:
    """Run the loop (resuming from a checkpoint if there is one), score, write the folder."""
    _check_batch_splits(run)
    spec_dict = {**run.spec.to_dict(), "data_fingerprint": run.data.fingerprint}
    loop = Loop(
        run.spec,
        run.task,
        run.model,
        run.params,
        run.data.train,
        run.data.eval,
        run.accelerator,
        run.emit,
        run.extra_rows,
    )
    _start(run, loop, spec_dict)
    out_dir = Path(run.spec.out_dir)
    stopped = loop.run(run.should_stop, run.checkpoint_dir, out_dir / "checkpoint", spec_dict)
    before, metrics, seen = _final_metrics(run, loop, stopped)
    result = TrainResult(
        adapter_dir=str(out_dir),
        metrics=metrics,
        train_seconds=loop.state.train_seconds,
        steps=loop.state.step,
        stopped=stopped,
        labels=list(run.data.labels),
        task=run.spec.task,
        base_model=run.spec.model,
        trainable_params=_trainable(run),
        target_modules=run.model.peft_config["default"].target_modules,
        metrics_before=before,
        insights=seen,
        insights_note=_insights_note(run, stopped, seen),
    )
    if run.accelerator.is_main_process:
        write_adapter(run, result)
    run.accelerator.wait_for_everyone()
    run.emit(
        "finished",
        metrics=metrics,
        adapter_dir=str(out_dir),
        stopped=stopped,
        steps=loop.state.step,
        train_seconds=result.train_seconds,
    )
    return result


def _check_batch_splits(run: Run) -> None:
    processes = run.accelerator.num_processes
    if run.spec.batch_size % processes:
        raise SpecError(
            [
                f"batch_size {run.spec.batch_size} does not split evenly over "
                f"{processes} processes; use a multiple of {processes}."
            ]
        )


def _trainable(run: Run) -> int:
    return sum(p.numel() for p in run.params.values())


def _start(run: Run, loop: Loop, spec_dict: dict) -> None:
    """Resume from the checkpoint folder if it holds one, then say so in the started event."""
    # the data is identified by its content, so a worker with another data dir can resume
    resumed = loop.resume(run.checkpoint_dir, spec_dict)
    run.emit(
        "started",
        total_steps=run.spec.steps,
        step=loop.state.step,
        resumed=resumed,
        trainable_params=_trainable(run),
        device=str(run.accelerator.device),
        processes=run.accelerator.num_processes,
        train_rows=len(run.data.train),
        eval_rows=len(run.data.eval),
        labels=run.data.labels,
        setup_seconds=time.perf_counter() - run.started,
    )
    weight = getattr(run.task, "pair_weight", 0.0)
    if weight:
        run.emit(
            "log",
            message=f"Pair objective (weight {weight:g}) on the body's sentence embedding: "
            f"the last layer, {' + '.join(run.task.pooling)} pooling.",
        )
    if run.extra_rows:
        named = [readable_name(run.data.labels[i]) for i in run.extra_rows["label"]]
        shown = [repr(name[:40]) for name in named[:6]]
        more = len(named) - len(shown)
        names = ", ".join(shown) + (f" and {more} more" if more > 0 else "")
        frame = NAME_FRAME.format("<name>")
        run.emit(
            "log",
            message=f"Each label's name also trains as one row of its class, as '{frame}' "
            f"({names}): {run.label_rows_note} (turn off: --no-label-rows, or label_rows false).",
        )
    elif run.label_rows_note:
        run.emit("log", message=f"The label names do not train as rows: {run.label_rows_note}.")


def _final_metrics(run: Run, loop: Loop, stopped: bool) -> tuple[dict, dict, dict | None]:
    """(before, after, insights): the untrained adapter's score, the final one, and the
    validation insights of both; a stopped run keeps its last evaluation and skips the rest."""
    if stopped:
        return {}, dict(loop.state.last_metrics), None
    before, seen_before = loop.evaluate_initial()
    run.emit("eval", step=0, metrics=before, before=True)
    if run.spec.early_stopping_patience:
        loop.restore_best()  # with early stopping, the adapter is the best evaluation's
    metrics = loop.evaluate(final=True)
    run.emit("eval", step=loop.state.step, metrics=metrics)
    seen = insights.combine(run.task, run.data.eval, seen_before, loop.insights(), before, metrics)
    return before, metrics, seen


def _insights_note(run: Run, stopped: bool, seen: dict | None) -> str | None:
    """Why a run has no validation insights (None when it has them); said in the log too."""
    if seen is not None:
        return None
    note = insights.STOPPED if stopped else insights.NO_ROWS
    if not stopped:
        run.emit("log", message=note)
    return note


def write_adapter(run: Run, result: TrainResult) -> None:
    """The adapter folder: PEFT files, README.md model card, training_info.json."""
    spec, data = run.spec, run.data
    out = Path(result.adapter_dir)
    run.model.save_pretrained(out)
    config_path = out / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = portable_base_name(spec.model)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))
    info = {
        "task": spec.task,
        "kind": run.loaded.kind,
        "labels": list(data.labels),
        "template": spec.template,
        "prompt": run.prompt,
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
