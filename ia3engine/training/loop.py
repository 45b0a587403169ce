"""The step loop: data order, micro-batches, clipping, schedule, evaluation, early stop, events.

Everything it changes lives in `LoopState` plus the trainable tensors and the optimizer, which
is exactly what a checkpoint holds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ia3engine.training.checkpoint import (
    check_same_spec,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from ia3engine.training.insights import measure as measure_insights
from ia3engine.training.losses import pair_loss
from ia3engine.training.spec import BOUNDS
from ia3engine.training.tasks import evaluate
from ia3engine.wrappers import is_adapter_param

logger = logging.getLogger(__name__)

CLIP_NORM = 1.0
PAIR_ROWS = BOUNDS["batch_size"][1]  # rows paired together at most: a spec's largest batch


@dataclass
class LoopState:
    """Where training stands: enough, with the tensors, to continue exactly."""

    step: int = 0
    epoch: int = 0  # data order: pass over the training rows ...
    position: int = 0  # ... and the next row of that pass's permutation
    best_metric: float | None = None
    best_step: int | None = None
    best_metrics: dict = field(default_factory=dict)
    best_state: dict | None = None  # trainable tensors at the best evaluation
    bad_evals: int = 0  # evaluations since the last improvement
    train_seconds: float = 0.0
    last_metrics: dict = field(default_factory=dict)
    early_stopped: bool = False
    initial_state: dict | None = None  # trainable tensors before step 1, for the "before" score


def make_optimizer(spec, groups: list[dict]):
    """AdamW, or Adafactor with T-Few's settings (fixed lr, parameter scaling, no warm-up init)."""
    if spec.optimizer == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(
            groups,
            lr=spec.lr,
            relative_step=False,
            scale_parameter=True,
            warmup_init=False,
            weight_decay=0.0,
        )
    return torch.optim.AdamW(groups, lr=spec.lr, weight_decay=0.0)


def make_schedule(optimizer, total_steps: int, warmup_ratio: float):
    """Linear warm-up over warmup_ratio of the steps, then linear decay to zero."""
    warmup = int(round(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class Loop:
    """Runs the optimizer steps of one training run on an accelerate Accelerator."""

    def __init__(
        self, spec, task, model, params, train_data, eval_data, accelerator, emit, extra_rows=None
    ):
        self.spec, self.task, self.accelerator, self.emit = spec, task, accelerator, emit
        self.params = params  # name -> trainable Parameter (vectors and head)
        self.train_rows = columns_with(train_data, extra_rows)
        self.n_rows = len(next(iter(self.train_rows.values()), []))
        self.eval_data = eval_data
        self.state = LoopState(initial_state=_snapshot(params))
        world = accelerator.num_processes
        self.per_process = spec.batch_size // world
        groups = _param_groups(params, spec)
        optimizer = make_optimizer(spec, groups)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.schedule = make_schedule(self.optimizer.optimizer, spec.steps, spec.warmup_ratio)
        self.step_times: list[float] = []

    # ---- data order ------------------------------------------------------------------------
    def _order(self, epoch: int) -> list[int]:
        gen = torch.Generator().manual_seed(self.spec.seed * 100_003 + epoch)
        return torch.randperm(self.n_rows, generator=gen).tolist()

    def _next_rows(self) -> dict:
        """This process's share of the next global batch, walking seeded permutations."""
        picked = []
        order = self._order(self.state.epoch)
        while len(picked) < self.spec.batch_size:
            if self.state.position >= self.n_rows:
                self.state.epoch, self.state.position = self.state.epoch + 1, 0
                order = self._order(self.state.epoch)
            picked.append(order[self.state.position])
            self.state.position += 1
        rank = self.accelerator.process_index
        mine = picked[rank * self.per_process : (rank + 1) * self.per_process]
        return {k: [v[i] for i in mine] for k, v in self.train_rows.items()}

    # ---- one step --------------------------------------------------------------------------
    def _step(self) -> float:
        self.model.train()
        accum = self.spec.grad_accum
        batches = [self.task.batch(self._next_rows()) for _ in range(accum)]
        split = accum > 1 or self.accelerator.num_processes > 1
        if split and getattr(self.task, "pair_weight", 0.0) > 0:
            total = pairs_over_split_batch(self.model, self.task, batches, self.accelerator)
        else:
            total = 0.0
            for micro, batch in enumerate(batches):
                with _gradient_sync(self.accelerator, self.model, micro == accum - 1):
                    loss = self.task.loss(self.model, batch) / accum
                    self.accelerator.backward(loss)
                total += loss.detach().float().item()
        self.accelerator.clip_grad_norm_(list(self.params.values()), CLIP_NORM)
        self.optimizer.step()
        self.schedule.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        mean = torch.tensor(total, device=self.accelerator.device)
        return self.accelerator.reduce(mean, reduction="mean").item()

    def _stop_requested(self, should_stop) -> bool:
        flag = bool(should_stop()) if should_stop is not None else False
        if self.accelerator.num_processes == 1:
            return flag
        value = torch.tensor(float(flag), device=self.accelerator.device)
        return bool(self.accelerator.reduce(value, reduction="sum").item() > 0)

    # ---- evaluation ------------------------------------------------------------------------
    def evaluate(self, final: bool = False) -> dict:
        return self._measure(
            lambda model: evaluate(self.task, model, self.eval_data, self._eval_batch(), final)
        )

    def insights(self) -> dict | None:
        """One side of the validation insights (ia3engine/training/insights.py), bounded."""
        return self._measure(
            lambda model: measure_insights(self.task, model, self.eval_data, self._eval_batch())
        )

    def _measure(self, score):
        model = self.accelerator.unwrap_model(self.model)
        model.eval()
        try:
            return score(model)
        finally:
            model.train()

    def _eval_batch(self) -> int:
        return max(8, self.spec.batch_size)

    def _after_eval(self, metrics: dict) -> None:
        state = self.state
        state.last_metrics = metrics
        value = metrics.get(self.task.metric)
        if value is None:
            return
        better = state.best_metric is None or (
            value > state.best_metric if self.task.higher_is_better else value < state.best_metric
        )
        # equal accuracy: the lower validation loss wins (small eval sets tie often)
        tied = value == state.best_metric and self.task.higher_is_better
        if tied and metrics.get("loss", 0.0) < state.best_metrics.get("loss", float("inf")):
            better = True
        if better:
            state.best_metric, state.best_step, state.best_metrics = value, state.step, metrics
            state.best_state = _snapshot(self.params)
            state.bad_evals = 0
        else:
            state.bad_evals += 1
        patience = self.spec.early_stopping_patience or 0
        if patience and state.bad_evals >= patience:
            state.early_stopped = True
            self.emit(
                "log", message=f"Early stop at step {state.step}: no gain in {patience} evals."
            )

    # ---- checkpoints -----------------------------------------------------------------------
    def checkpoint(self, folder, spec_dict: dict) -> Path:
        payload = {
            "spec": spec_dict,
            "trainable": _snapshot(self.params),
            "optimizer": self.optimizer.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "loop": dataclasses.asdict(self.state),
        }
        path = save_checkpoint(
            folder, payload, self.accelerator.process_index, self.accelerator.is_main_process
        )
        self.accelerator.wait_for_everyone()
        self.emit("checkpoint", step=self.state.step, path=str(Path(folder)))
        return path

    def resume(self, folder, spec_dict: dict) -> bool:
        payload = load_checkpoint(folder, self.accelerator.process_index)
        if payload is None:
            return False
        check_same_spec(payload["spec"], spec_dict, folder)
        self._load(payload["trainable"])
        self.optimizer.optimizer.load_state_dict(payload["optimizer"])
        self.schedule.load_state_dict(payload["schedule"])
        self.state = LoopState(**payload["loop"])
        if payload.get("rng") is not None:
            set_rng_state(payload["rng"])
        self.emit("log", message=f"Resumed from the checkpoint at step {self.state.step}.")
        return True

    def restore_best(self) -> None:
        """Put back the trainable tensors of the best evaluation (when it was not the last)."""
        best = self.state.best_state
        if best is None or self.state.best_step == self.state.step:
            return
        self._load(best)
        logger.info("Keeping the best evaluation's weights (step %s).", self.state.best_step)

    def evaluate_initial(self) -> tuple[dict, dict | None]:
        """Scores and insights of the weights before step 1, measured now: evaluation uses no
        randomness, so this equals a step-0 evaluation without delaying the first step."""
        if self.state.initial_state is None:
            return {}, None
        current = _snapshot(self.params)
        self._load(self.state.initial_state)
        try:
            return self.evaluate(), self.insights()
        finally:
            self._load(current)

    def _load(self, tensors: dict) -> None:
        with torch.no_grad():
            for name, param in self.params.items():
                param.copy_(tensors[name].to(param.device, param.dtype))

    # ---- the loop --------------------------------------------------------------------------
    def run(self, should_stop=None, checkpoint_dir=None, stop_dir=None, spec_dict=None) -> bool:
        """Train until spec.steps, early stop or a stop request; True when stopped on request."""
        spec, state = self.spec, self.state
        while state.step < spec.steps and not state.early_stopped:
            if self._stop_requested(should_stop):
                self.checkpoint(checkpoint_dir or stop_dir, spec_dict)
                return True
            started = time.perf_counter()
            loss = self._step()
            elapsed = time.perf_counter() - started
            state.train_seconds += elapsed
            self._emit_step(loss, elapsed)
            due = spec.eval_every and state.step % spec.eval_every == 0
            if due and state.step < spec.steps:
                if len(self.eval_data):  # with no validation rows only the checkpoint is due
                    metrics = self.evaluate()
                    self.emit("eval", step=state.step, metrics=metrics)
                    self._after_eval(metrics)
                if checkpoint_dir is not None:
                    self.checkpoint(checkpoint_dir, spec_dict)
        return False

    def _emit_step(self, loss: float, elapsed: float) -> None:
        self.step_times = (self.step_times + [elapsed])[-20:]
        per_step = sum(self.step_times) / len(self.step_times)
        examples = self.spec.batch_size * self.spec.grad_accum
        self.emit(
            "step",
            step=self.state.step,
            total_steps=self.spec.steps,
            loss=loss,
            lr=self.schedule.get_last_lr()[0],
            examples_per_s=examples / max(per_step, 1e-9),
            eta_s=per_step * (self.spec.steps - self.state.step),
        )


def _gradient_sync(accelerator, model, last: bool):
    """Processes average their gradients on the last micro-batch of a step only."""
    return contextlib.nullcontext() if last else accelerator.no_sync(model)


def pairs_over_split_batch(model, task, batches: list[dict], accelerator) -> float:
    """Backward of one step whose global batch is split (micro-batches for gradient
    accumulation, slices for processes), with the pair objective over every pair of the whole
    global batch, as one unsplit forward would pair them; returns the step's loss on this
    process (mean cross-entropy of its rows plus the pair loss).

    A pair joins rows that live in different forwards, so the pair loss cannot be summed per
    micro-batch. Two passes instead (the gradient-cache way): every micro-batch's sentence
    embedding without a graph, gathered from every process; the pair loss on all of them and
    its gradient with respect to each embedding; then each micro-batch forwards again with
    its graph and backpropagates its cross-entropy plus `<embedding, its gradient>`, whose
    gradient is exactly the whole batch's pair gradient through these rows. Every
    micro-batch's random state (dropout) is replayed in its second forward, so both passes
    see the same masks, and the generators end where the first pass left them. Memory stays
    that of one micro-batch (and the gathered embeddings); the price is one forward without a
    graph per micro-batch.

    At most PAIR_ROWS rows are paired together (the pair matrix grows with their square): a
    longer step pairs within consecutive groups of micro-batches of that many rows, each
    group's pair loss weighted by its share of the step."""
    rows = len(batches[0]["labels"]) * accelerator.num_processes
    size = max(1, PAIR_ROWS // rows)
    total = 0.0
    for first in range(0, len(batches), size):
        micros = range(first, min(first + size, len(batches)))
        total += _pair_group(model, task, batches, micros, accelerator)
    return total


def _pair_group(model, task, batches: list[dict], micros: range, accelerator) -> float:
    """The two passes of `pairs_over_split_batch` over the micro-batches `micros`."""
    device = accelerator.device
    states, embeddings, labels = [], [], []
    with torch.no_grad():
        for micro in micros:
            states.append(_dropout_state(device))
            _, embedding, label = task.loss_parts(model, batches[micro])
            embeddings.append(embedding)
            labels.append(label)
    local = torch.cat(embeddings)
    every = accelerator.gather(local).detach().requires_grad_(True)
    share = len(micros) / len(batches)
    pairs = share * task.pair_weight * pair_loss(every, accelerator.gather(torch.cat(labels)))
    pairs.backward()
    # processes average their gradients, so each one carries its rows' share times their count
    start = accelerator.process_index * len(local)
    grads = every.grad[start : start + len(local)] * accelerator.num_processes
    accum, total, offset = len(batches), 0.0, 0
    for state, micro in zip(states, micros, strict=True):
        _set_dropout_state(device, state)
        with _gradient_sync(accelerator, model, micro == accum - 1):
            cross_entropy, embedding, _ = task.loss_parts(model, batches[micro])
            grad = grads[offset : offset + len(embedding)].to(embedding.dtype)
            accelerator.backward(cross_entropy / accum + (embedding * grad).sum())
        offset += len(embedding)
        total += cross_entropy.detach().float().item() / accum
    return total + pairs.detach().float().item()


def _dropout_state(device: torch.device) -> tuple:
    """The generators dropout draws from on `device`: the CPU's, and the device's own on CUDA
    or MPS (only this one: reading every GPU's would start a context on each)."""
    if device.type == "cuda":
        return torch.get_rng_state(), torch.cuda.get_rng_state(device)
    if device.type == "mps":
        return torch.get_rng_state(), torch.mps.get_rng_state()
    return torch.get_rng_state(), None


def _set_dropout_state(device: torch.device, state: tuple) -> None:
    cpu, own = state
    torch.set_rng_state(cpu)
    if device.type == "cuda":
        torch.cuda.set_rng_state(own, device)
    elif device.type == "mps":
        torch.mps.set_rng_state(own)


def columns_with(train_data, extra_rows: dict | None = None) -> dict[str, list]:
    """The training rows as columns, with rows the recipe adds (label names) after them."""
    rows = {key: list(train_data[key]) for key in train_data.column_names}
    for key, values in (extra_rows or {}).items():
        rows[key] += list(values)
    return rows


def _snapshot(params: dict) -> dict:
    return {n: p.detach().cpu().clone() for n, p in params.items()}


def _param_groups(params: dict, spec) -> list[dict]:
    vectors = [p for n, p in params.items() if is_adapter_param(n)]
    head = [p for n, p in params.items() if not is_adapter_param(n)]
    groups = [{"params": vectors, "lr": spec.lr}]
    if head:
        groups.append({"params": head, "lr": spec.head_lr or spec.lr})
    return groups
