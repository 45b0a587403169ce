"""Every CUDA path of the engine in one prepared script, each checked against fp32.

Tiny models and a ~1B Llama built from a config with random weights: fp32 step (the reference),
bf16/fp16 autocast steps, 8-bit and 4-bit bitsandbytes bases (train, merge, unmerge), mixed-batch
generate with the KV cache, torch.compile, and bench/engine.py's figures against PEFT. Needs only
torch + transformers (+ peft, bitsandbytes when present): `PYTHONPATH=. python3 bench/gpu.py`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import signal
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

STARTED = time.perf_counter()  # the budget counts the imports too
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("KINETO_LOG_LEVEL", "6")  # engine.py's op counts: no profiler chatter
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import transformers  # noqa: E402
from torch import nn  # noqa: E402
from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
)
from transformers.utils import logging as hf_logging  # noqa: E402

from ia3engine.config import IA3Config  # noqa: E402
from ia3engine.model import get_ia3_model  # noqa: E402
from ia3engine.wrappers import is_adapter_param  # noqa: E402

try:  # the peer and its figures: optional on the GPU machine
    from bench import engine
except ImportError as error:  # peft (or another of engine.py's imports) is missing
    engine, ENGINE_MISSING = None, f"bench/engine.py cannot be imported ({error})"
else:
    ENGINE_MISSING = ""
try:
    import bitsandbytes as bnb
    import bitsandbytes.functional as bnbf
except Exception as error:  # ImportError, or a broken CUDA set-up of its native library
    bnb, BNB_MISSING = None, f"bitsandbytes is not importable ({type(error).__name__}: {error})"
else:
    BNB_MISSING = ""

# ---- what runs on what -------------------------------------------------------------------
LLAMA_SIZES = {
    "tiny": dict(
        vocab_size=512,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    ),
    # Llama-3.2-1B's layout with a 32k vocabulary (untied head): 1.10B parameters
    "1B": dict(
        vocab_size=32000,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=2048,
    ),
}
# (rows, tokens) of a training batch; (rows = adapters, prompt, new tokens) of a generate
TRAIN_BATCH = {"tiny": (4, 32), "1B": (4, 256)}
GENERATE = {"tiny": (8, 8, 12), "1B": (16, 16, 32)}
# the engine benchmark's own model on CUDA (all-MiniLM-L6-v2's shapes), a tiny one on --cpu
BERT_SIZES = {
    "MiniLM-shaped BERT": dict(
        hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536
    ),
    "tiny BERT": dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    ),
}
QUANTIZED = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# Tolerances against fp32: relative error ||x - ref|| / ||ref|| over logits or over all IA3
# gradients. Loose enough for rounding in the stated dtype, tight enough that a wrong dtype,
# a lost scale or a mis-routed row (errors of order 1) fails.
TOL = {
    "identity": 1e-6,  # IA3 with vectors of ones vs the bare model (expected exactly 0)
    # bf16 rounds each op to 2^-8 (fp16: 2^-11); over a 16-layer model that adds up to a few %
    "bf16": {"loss": 2e-2, "logits": 1e-1, "grads": 2e-1},
    "fp16": {"loss": 1e-2, "logits": 3e-2, "grads": 5e-2},
    # bitsandbytes vs an fp32 twin holding the dequantized weights: int8 also quantizes the
    # activations (LLM.int8), the 4-bit kernel computes in bf16 on CUDA (fp32 on the CPU)
    "int8": {"logits": 1.5e-1, "grads": 3e-1, "merge": 1e-1},
    "nf4": {"logits": 1e-1, "grads": 2e-1, "merge": 2e-1},
    "generate": 1e-3,  # greedy logits with the KV cache vs one full forward per adapter
    "compile": 1e-3,  # compiled vs eager, logits and gradients
}
# seconds each section may take on one H100 (the budget check skips what no longer fits)
ESTIMATE_S = {
    "tiny": 20,
    "1B": 45,
    "engine": 60,
    "engine-1B": 120,
    "compile": 90,
    "compile-1B": 150,
}


CPU_NOTE = """\
A smoke run: tiny models, 2 rounds, one thread of a shared CPU. It shows that every path runs and
meets its fp32 tolerance here; its timings, and the engine goals judged on a tiny BERT, say
nothing about the engine's speed (the Engine section has the CPU figures on the real MiniLM)."""


class Skip(Exception):
    """A section that cannot run here; the message says why."""


class OverBudget(Exception):
    """Raised by the alarm when --budget-s runs out inside a section."""


@dataclass
class Row:
    section: str
    model: str
    status: str = "ran"  # ran | skipped | failed
    measured: str = ""
    tolerance: str = ""
    passed: bool | None = None  # None: nothing to check
    kind: str = "tolerance"  # tolerance (a correctness check) | goal (a performance goal)
    reason: str = ""  # why skipped / what failed
    figures: dict = field(default_factory=dict)


@dataclass
class Context:
    device: torch.device
    budget_s: float
    start: float
    compile_backend: str
    rounds: int
    compile_on_cpu: bool = False
    rows: list[Row] = field(default_factory=list)

    def left_s(self) -> float:
        return self.budget_s - (time.perf_counter() - self.start)


# ---- small tools -------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def wall_clock() -> float:
    """Wall time after the device has finished its queued work (engine.py's clock on CUDA)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()


def median_time(fn: Callable, device: torch.device, reps: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@contextlib.contextmanager
def peak_memory(device: torch.device, into: dict, key: str):
    """Peak bytes allocated on the device inside the block, above what was there before."""
    if device.type != "cuda":
        yield
        return
    sync(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    yield
    sync(device)
    into[key] = torch.cuda.max_memory_allocated(device) - before
    into[key + "_resident"] = torch.cuda.memory_allocated(device) - before


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def rel(value: torch.Tensor, reference: torch.Tensor) -> float:
    value, reference = value.detach().double(), reference.detach().double()
    return ((value - reference).norm() / reference.norm()).item()


def free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---- models and batches ------------------------------------------------------------------
def llama(size: str, device: torch.device, seed: int = 0, head: str = "lm") -> nn.Module:
    """A Llama with random weights from its config, built directly on the device."""
    config = LlamaConfig(
        **LLAMA_SIZES[size], pad_token_id=0, bos_token_id=1, eos_token_id=2, num_labels=2
    )
    torch.manual_seed(seed)
    cls = LlamaForCausalLM if head == "lm" else LlamaForSequenceClassification
    with torch.device(device):
        model = cls(config)
    return model.eval()


def lm_batch(size: str, device: torch.device, seed: int = 1) -> dict[str, torch.Tensor]:
    rows, tokens = TRAIN_BATCH[size]
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, LLAMA_SIZES[size]["vocab_size"], (rows, tokens), generator=gen)
    ids = ids.to(device)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def set_vectors(model: nn.Module, seed: int = 5, spread: float = 0.2) -> None:
    """Every IA3 vector to 1 + spread * N(0, 1), drawn in name order: same on every twin."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if is_adapter_param(name):
                param.copy_(1 + spread * torch.randn(param.shape, generator=gen))


def ia3_llama(base: nn.Module) -> nn.Module:
    return get_ia3_model(base, IA3Config(task_type="CAUSAL_LM"))


def loss_logits_grads(model, batch, dtype: torch.dtype | None = None):
    """One forward and backward (autocast to `dtype` if given): loss, logits, IA3 gradients."""
    model.zero_grad(set_to_none=True)
    model.train()
    device = batch["input_ids"].device
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    with autocast:
        out = model(**batch)
    out.loss.backward()
    grads = torch.cat(  # an inactive adapter has no gradient: zeros keep the twins aligned
        [
            torch.zeros(p.numel(), device=p.device) if p.grad is None else p.grad.flatten().float()
            for n, p in model.named_parameters()
            if is_adapter_param(n)
        ]
    )
    model.zero_grad(set_to_none=True)
    return out.loss.detach().float(), out.logits.detach().float(), grads


def train_step(model, batch, dtype: torch.dtype | None = None) -> Callable[[], None]:
    """A full step (autocast forward, backward, AdamW; GradScaler for fp16) to be timed."""
    device = batch["input_ids"].device
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    model.train()

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext():
            loss = model(**batch).loss
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    return step


def check(row: Row, errors: dict[str, float], limits: dict[str, float]) -> None:
    row.figures.update({f"rel_err_{k}": v for k, v in errors.items()})
    row.passed = all(errors[k] <= limits[k] for k in errors)
    failed = [k for k in errors if errors[k] > limits[k]]
    parts = ", ".join(f"{k} {v:.2e}" for k, v in errors.items())
    row.measured = f"rel. error {parts}" + (f" (**over**: {', '.join(failed)})" if failed else "")
    row.tolerance = ", ".join(f"{k} <= {limits[k]:g}" for k in errors)


# ---- sections: fp32 reference and autocast -----------------------------------------------
class Precision:
    """One IA3 Llama per size, the fp32 reference of its loss, logits and gradients."""

    def __init__(self, size: str, device: torch.device):
        self.size, self.device = size, device
        base = llama(size, device)
        self.batch = lm_batch(size, device)
        with torch.no_grad():
            self.bare_logits = base(**self.batch).logits.float()
        self.model = ia3_llama(base)  # vectors of ones: must be the bare model
        with torch.no_grad():
            self.identity = rel(self.model(**self.batch).logits, self.bare_logits)
        set_vectors(self.model)
        self.reference = loss_logits_grads(self.model, self.batch)

    def autocast_errors(self, dtype: torch.dtype) -> dict[str, float]:
        set_vectors(self.model)
        loss, logits, grads = loss_logits_grads(self.model, self.batch, dtype)
        ref_loss, ref_logits, ref_grads = self.reference
        return {
            "loss": rel(loss, ref_loss),
            "logits": rel(logits, ref_logits),
            "grads": rel(grads, ref_grads),
        }

    def time_step(self, row: Row, dtype: torch.dtype | None, reps: int) -> None:
        step = train_step(self.model, self.batch, dtype)
        step()  # warm-up (kernels, optimizer state) before the memory is measured
        with peak_memory(self.device, row.figures, "peak_bytes"):
            step()
        row.figures["step_s"] = median_time(step, self.device, reps)
        set_vectors(self.model)
        memory = row.figures.get("peak_bytes")
        row.measured += f"; step {row.figures['step_s'] * 1000:.1f} ms" + (
            f", peak +{gib(memory)} over the weights" if memory is not None else ""
        )


def fp32_section(ctx: Context, size: str, state: dict, row: Row) -> None:
    precision = state["precision"] = Precision(size, ctx.device)
    loss = precision.reference[0].item()
    row.figures.update(loss=loss, identity_rel_err=precision.identity)
    row.passed = precision.identity <= TOL["identity"] and bool(
        torch.isfinite(precision.reference[2]).all()
    )
    row.measured = (
        f"loss {loss:.3f}; IA3 at init vs bare model: rel. error {precision.identity:.1e}"
    )
    row.tolerance = f"identity at init <= {TOL['identity']:g} (expected 0); finite gradients"
    precision.time_step(row, None, ctx.rounds)


def autocast_section(dtype_name: str) -> Callable:
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]

    def section(ctx: Context, size: str, state: dict, row: Row) -> None:
        if "precision" not in state:
            raise Skip("the fp32 reference did not run")
        supported(ctx.device, dtype)
        precision = state["precision"]
        check(row, precision.autocast_errors(dtype), TOL[dtype_name])
        precision.time_step(row, dtype, ctx.rounds)

    return section


def supported(device: torch.device, dtype: torch.dtype) -> None:
    """Raise Skip when autocast to `dtype` does not work on this device."""
    if device.type == "cuda":
        if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            raise Skip("this GPU has no bf16 support (torch.cuda.is_bf16_supported() is False)")
        return
    try:
        with torch.autocast(device.type, dtype=dtype):
            out = nn.Linear(4, 4).to(device)(torch.ones(2, 4, device=device))
        out.sum().backward()
    except (RuntimeError, TypeError) as error:
        raise Skip(f"{dtype} autocast does not run on {device.type}: {error}") from error


# ---- sections: bitsandbytes bases --------------------------------------------------------
def quantized_linear(linear: nn.Linear, kind: str, device: torch.device) -> nn.Module:
    bias = linear.bias is not None
    if kind == "int8":  # transformers' load_in_8bit defaults
        layer = bnb.nn.Linear8bitLt(
            linear.in_features, linear.out_features, bias, has_fp16_weights=False, threshold=6.0
        )
    else:
        compute = torch.bfloat16 if device.type == "cuda" else torch.float32
        layer = bnb.nn.Linear4bit(
            linear.in_features, linear.out_features, bias, compute_dtype=compute, quant_type="nf4"
        )
    layer.load_state_dict({k: v.detach().cpu() for k, v in linear.state_dict().items()})
    return layer.to(device)  # moving a CPU float weight to the device is what quantizes it


def dequantized(layer: nn.Module, kind: str) -> torch.Tensor:
    """The float weight a quantized layer stands for, read with bitsandbytes' own formats."""
    weight = layer.weight
    if kind == "int8":
        return weight.data.float() * (weight.SCB.float().unsqueeze(1) / 127.0)
    return bnbf.dequantize_4bit(weight.data, weight.quant_state).float()


def quantize_model(model: nn.Module, kind: str, device: torch.device) -> dict[str, torch.Tensor]:
    """Replace the decoder's linears by bitsandbytes layers; returns their dequantized weights."""
    weights = {}
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and name in QUANTIZED:
                layer = quantized_linear(child, kind, device)
                setattr(parent, name, layer)
                weights[f"{parent_name}.{name}.weight"] = dequantized(layer, kind).to(device)
    return weights


def quantized_state(model: nn.Module, kind: str) -> list[torch.Tensor]:
    """The stored tensors of every quantized base layer (for the exact-unmerge check)."""
    out = []
    for _, layer in model.ia3_layers():
        weight = layer.base_layer.weight
        out.append(weight.data.clone())
        if kind == "int8":
            scb = weight.SCB if weight.SCB is not None else layer.base_layer.state.SCB
            out.append(scb.clone())
        else:
            out.append(weight.quant_state.absmax.clone())
    return out


def bnb_section(kind: str) -> Callable:
    def section(ctx: Context, size: str, state: dict, row: Row) -> None:
        if bnb is None:
            raise Skip(BNB_MISSING)
        device = ctx.device
        base = llama(size, device)
        weights = quantize_model(base, kind, device)
        twin = llama(size, device)  # fp32 reference: the same model with the dequantized weights
        with torch.no_grad():
            for name, param in twin.named_parameters():
                if name in weights:
                    param.copy_(weights.pop(name))
        if weights:
            raise RuntimeError(f"dequantized weights with no float twin: {sorted(weights)[:3]}")
        model, reference = ia3_llama(base), ia3_llama(twin)
        set_vectors(model)
        set_vectors(reference)
        batch = lm_batch(size, device)
        _, logits, grads = loss_logits_grads(model, batch)
        _, ref_logits, ref_grads = loss_logits_grads(reference, batch)
        del reference, twin
        free(device)
        errors = {"logits": rel(logits, ref_logits), "grads": rel(grads, ref_grads)}
        errors.update(merge_errors(model, batch, kind, row))
        limits = {**TOL[kind], "merge twice": 0.0, "unmerge": 0.0}
        check(row, errors, limits)
        row.measured += (
            f"; merge peak +{gib(row.figures['merge_peak_bytes'])}, still held after merge "
            f"+{gib(row.figures['merge_peak_bytes_resident'])}"
            if "merge_peak_bytes" in row.figures
            else ""
        )
        row.figures["step_s"] = median_time(train_step(model, batch), device, ctx.rounds)
        row.measured += f"; train step {row.figures['step_s'] * 1000:.1f} ms"
        row.tolerance += " (merge: vs unmerged output; merge twice, unmerge: exact)"

    return section


def merge_errors(model, batch, kind: str, row: Row) -> dict[str, float]:
    """merge vs unmerged output; a second merge changes nothing; unmerge restores exactly."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    model.eval()
    with torch.no_grad():
        unmerged = model(**inputs).logits.float()
        stored = quantized_state(model, kind)
        with peak_memory(batch["input_ids"].device, row.figures, "merge_peak_bytes"):
            model.merge()
        merged = model(**inputs).logits.float()
        model.merge()
        merged_twice = model(**inputs).logits.float()
        model.unmerge()
        restored = model(**inputs).logits.float()
        same_tensors = all(
            torch.equal(a, b) for a, b in zip(stored, quantized_state(model, kind), strict=True)
        )
    return {
        "merge": rel(merged, unmerged),
        "merge twice": rel(merged_twice, merged),
        "unmerge": rel(restored, unmerged) + (0.0 if same_tensors else 1.0),
    }


# ---- section: mixed-batch generate with the KV cache -------------------------------------
def generate_section(ctx: Context, size: str, state: dict, row: Row) -> None:
    device = ctx.device
    rows, prompt, new = GENERATE[size]
    config = IA3Config(task_type="CAUSAL_LM")
    model = get_ia3_model(llama(size, device), config, adapter_name="a0")
    names = [f"a{i}" for i in range(rows)]
    for name in names[1:]:
        model.add_adapter(name, config)
    set_vectors(model, spread=0.5)  # every adapter different
    model.eval()
    gen = torch.Generator().manual_seed(7)
    vocab = LLAMA_SIZES[size]["vocab_size"]
    ids = torch.randint(3, vocab, (rows, prompt), generator=gen).to(device)
    options = dict(
        max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0, use_cache=True
    )

    def mixed():
        return model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            adapter_names=names,
            output_logits=True,
            return_dict_in_generate=True,
            **options,
        )

    def switching():  # what a server without mixed batches does: one request at a time
        for i, name in enumerate(names):
            model.set_adapter(name)
            model.generate(
                input_ids=ids[i : i + 1], attention_mask=torch.ones_like(ids[i : i + 1]), **options
            )

    with torch.no_grad():
        out = mixed()
        logits = torch.stack(out.logits, dim=1).float()  # (rows, new, vocab)
        worst = 0.0
        for i, name in enumerate(names):  # the same tokens through one full forward, no cache
            model.set_adapter(name)
            full = model(input_ids=out.sequences[i : i + 1]).logits.float()
            worst = max(worst, rel(logits[i], full[0, prompt - 1 : prompt - 1 + new]))
        with bare_model(model):
            bare = model(input_ids=out.sequences).logits.float()[:, prompt - 1 : prompt - 1 + new]
    effect = rel(logits, bare)
    row.figures.update(rel_err_logits=worst, adapters_vs_bare=effect)
    row.passed = worst <= TOL["generate"] and effect > 10 * TOL["generate"]
    row.measured = (
        f"{rows} rows x {new} new tokens, greedy: rel. error of the cached logits vs a full "
        f"forward with each row's adapter {worst:.1e} (adapters vs bare model {effect:.2f})"
    )
    row.tolerance = f"<= {TOL['generate']:g}; the adapters must change the logits"
    reps = 1 if size == "1B" or device.type == "cpu" else 3
    with torch.no_grad():
        row.figures["mixed_s"] = median_time(mixed, device, reps)
        # no warm-up: the mixed batch warmed the kernels, and one pass is long on the 1B
        row.figures["switching_s"] = median_time(switching, device, reps, warmup=0)
    speedup = row.figures["switching_s"] / row.figures["mixed_s"]
    row.measured += (
        f"; {row.figures['mixed_s'] * 1000:.0f} ms for the mixed batch vs "
        f"{row.figures['switching_s'] * 1000:.0f} ms one request at a time ({speedup:.1f}x)"
    )


def bare_model(model):
    """PEFT's `disable_adapter()` context, or the engine's older `disable_adapters()`."""
    disable = getattr(model, "disable_adapter", None) or model.disable_adapters
    return disable()


# ---- section: torch.compile --------------------------------------------------------------
def compile_section(ctx: Context, size: str, state: dict, row: Row) -> None:
    device = ctx.device
    torch._dynamo.reset()
    config = IA3Config(task_type="CAUSAL_LM")
    model = get_ia3_model(llama(size, device), config, adapter_name="a0")
    model.add_adapter("a1", config)
    model.set_adapter("a0")
    set_vectors(model)
    batch = lm_batch(size, device)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    names = [f"a{i % 2}" for i in range(inputs["input_ids"].shape[0])]
    compiled = torch.compile(model, backend=ctx.compile_backend)
    model.eval()
    with torch.no_grad():
        eager = model(**inputs).logits.float()
        eager_mixed = model(**inputs, adapter_names=names).logits.float()
        sync(device)
        start = time.perf_counter()
        first = compiled(**inputs).logits.float()
        sync(device)
        row.figures["compile_forward_s"] = time.perf_counter() - start
        mixed = compiled(**inputs, adapter_names=names).logits.float()
    _, _, eager_grads = loss_logits_grads(model, batch)
    sync(device)
    start = time.perf_counter()
    loss, _, grads = loss_logits_grads(compiled, batch)
    sync(device)
    row.figures["compile_train_s"] = time.perf_counter() - start
    check(
        row,
        {
            "logits": rel(first, eager),
            "mixed": rel(mixed, eager_mixed),
            "grads": rel(grads, eager_grads),
        },
        {"logits": TOL["compile"], "mixed": TOL["compile"], "grads": TOL["compile"]},
    )
    if size == "tiny":  # graph breaks are a property of the code, not of the size
        explained = torch._dynamo.explain(model)(**inputs)
        row.figures["graph_breaks"] = explained.graph_break_count
        row.measured += f"; graph breaks (single adapter, forward) {explained.graph_break_count}"
    model.eval()

    def forward(m):
        def run():
            with torch.no_grad():
                m(**inputs)

        return run

    row.figures["eager_forward_s"] = median_time(forward(model), device, ctx.rounds)
    row.figures["compiled_forward_s"] = median_time(forward(compiled), device, ctx.rounds)
    row.figures["eager_step_s"] = median_time(train_step(model, batch), device, ctx.rounds)
    row.figures["compiled_step_s"] = median_time(train_step(compiled, batch), device, ctx.rounds)
    f = row.figures
    row.measured += (
        f"; compile {f['compile_forward_s']:.1f} s + {f['compile_train_s']:.1f} s; forward "
        f"{f['compiled_forward_s'] * 1000:.1f} ms compiled vs {f['eager_forward_s'] * 1000:.1f} ms "
        f"eager; step {f['compiled_step_s'] * 1000:.1f} vs {f['eager_step_s'] * 1000:.1f} ms"
    )
    torch._dynamo.reset()


# ---- section: bench/engine.py's figures ---------------------------------------------------
@contextlib.contextmanager
def engine_on(load_base: Callable, device: torch.device):
    """Point engine.py's measurements at `load_base` on `device`.

    Its functions look up the model builder, the batch maker and the clock in their module
    when they run, so the very same measurements run here on another model and device. On CUDA
    they are timed by wall clock after a synchronize; on the CPU by engine.py's own clock
    (process CPU time, steady on a shared machine).
    """
    saved = engine.load_base, engine.make_batch, engine.clock
    make_batch = engine.make_batch
    engine.load_base = load_base
    engine.make_batch = lambda rows, seed: {
        k: v.to(device) for k, v in make_batch(rows, seed).items()
    }
    if device.type == "cuda":
        engine.clock = wall_clock
    try:
        yield
    finally:
        engine.load_base, engine.make_batch, engine.clock = saved


def engine_rows(model: str, lines: list[str]) -> list[Row]:
    """engine.table's markdown rows (figure, measured, goal, status) as rows of this table."""
    rows = []
    for line in lines[2:]:
        figure, measured, goal, status = (cell.strip() for cell in line.strip("|").split(" | "))
        rows.append(Row(f"engine: {figure}", model, measured=measured, tolerance=goal, kind="goal"))
        rows[-1].passed = None if status == "-" else status == "met"
    return rows


def engine_base(size: str, device: torch.device) -> Callable:
    """engine.py's base for `size`: a SEQ_CLS model with random weights, built on the device."""
    if size == "1B":
        return lambda seed=0: llama("1B", device, seed, head="seq_cls")
    config = BertConfig(vocab_size=30522, num_labels=2, **BERT_SIZES[size])  # engine's ids

    def load_base(seed: int = 0):
        torch.manual_seed(seed)
        with torch.device(device):
            return BertForSequenceClassification(config).eval()

    return load_base


def engine_section(ctx: Context, size: str, state: dict, row: Row) -> list[Row]:
    if engine is None:
        raise Skip(ENGINE_MISSING)
    device = ctx.device
    rounds = ctx.rounds if size != "1B" else max(3, ctx.rounds // 2)
    with engine_on(engine_base(size, device), device):
        train = engine.bench_training(rounds)
        free(device)
        infer = engine.bench_inference(rounds * 2)
        free(device)
        many = engine.bench_many_adapters(max(3, rounds // 3))
        free(device)
        unmerge = engine.bench_unmerge()
    rows = engine_rows(size, engine.table(train, infer, many, unmerge))
    same = Row("engine: 64 adapters: ours (mixed batch) vs PEFT (per request), outputs", size)
    same.figures["max_logit_diff"] = diff = many["max_logit_diff"]
    same.measured = f"max logit difference {diff:.2e}"
    same.tolerance, same.passed = "<= 1e-3", diff <= 1e-3
    rows.append(same)
    rows[0].figures = {"train": train, "infer": infer, "many": many, "unmerge": unmerge}
    return rows


# ---- the plan ----------------------------------------------------------------------------
def plan(cpu: bool) -> list[tuple[str, Callable, str, str]]:
    """(row title, section, model, budget estimate key), in the order they run."""
    bert = "tiny BERT" if cpu else "MiniLM-shaped BERT"
    backend = "aot_eager" if cpu else "inductor"
    per_size = [
        ("fp32 training step (reference)", fp32_section),
        ("bf16 autocast training step", autocast_section("bf16")),
        ("fp16 autocast training step (GradScaler)", autocast_section("fp16")),
        ("8-bit base: train, merge, unmerge", bnb_section("int8")),
        ("4-bit nf4 base: train, merge, unmerge", bnb_section("nf4")),
        ("mixed-batch generate, KV cache, one adapter per row", generate_section),
    ]
    compile_title = f"torch.compile ({backend}): forward, mixed batch, training step"
    return [  # compile last: the slowest to warm up, the first to go when time runs short
        *[(title, fn, "tiny", "tiny") for title, fn in per_size],
        ("engine figures (bench/engine.py)", engine_section, bert, "engine"),
        *[(title, fn, "1B", "1B") for title, fn in per_size],
        ("engine figures (bench/engine.py)", engine_section, "1B", "engine-1B"),
        (compile_title, compile_section, "tiny", "compile"),
        (compile_title, compile_section, "1B", "compile-1B"),
    ]


def skip_reason(ctx: Context, fn: Callable, size: str, estimate: str) -> str:
    if size == "1B" and ctx.device.type != "cuda":
        return "--cpu: tiny models only (the 1B model is for CUDA)"
    if fn is compile_section and ctx.device.type != "cuda" and not ctx.compile_on_cpu:
        return (
            "--cpu: torch.compile is measured on CUDA (--compile-on-cpu runs it here with "
            "aot_eager: about 100 s on 2 busy cores)"
        )
    if ctx.left_s() < ESTIMATE_S[estimate]:
        return (
            f"--budget-s: {max(0.0, ctx.left_s()):.0f} s left, the section needs about "
            f"{ESTIMATE_S[estimate]} s"
        )
    return ""


@contextlib.contextmanager
def deadline(seconds: float):
    """Raise OverBudget in the main thread once `seconds` have passed (where SIGALRM exists)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(_signum, _frame):
        raise OverBudget(f"--budget-s ran out inside this section (after {seconds:.0f} s)")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_section(ctx: Context, fn: Callable, size: str, state: dict, row: Row) -> list[Row]:
    try:
        with deadline(ctx.left_s()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(ctx, size, state, row) or [row]
    except Skip as skip:
        row.status, row.reason = "skipped", str(skip)
    except OverBudget as stop:
        row.status, row.reason = "skipped", f"stopped: {stop}; its partial results are dropped"
    except Exception as error:  # one broken path must not hide the others
        traceback.print_exc()
        row.status, row.reason = "failed", f"{type(error).__name__}: {error}"[:300]
    if fn is compile_section:
        torch._dynamo.reset()
    return [row]


def run_plan(ctx: Context, cpu: bool) -> None:
    state: dict = {}  # what sections of one model share (the fp32 reference)
    for title, fn, size, estimate in plan(cpu):
        if state.get("size") != size:
            state = {"size": size}
            free(ctx.device)
        row = Row(title, size)
        row.reason = skip_reason(ctx, fn, size, estimate)
        start = time.perf_counter()
        if row.reason:
            row.status, rows = "skipped", [row]
        else:
            rows = run_section(ctx, fn, size, state, row)
        seconds = time.perf_counter() - start
        for one in rows:
            one.figures.setdefault("section_s", round(seconds, 2))
            ctx.rows.append(one)
            print(
                f"{one.status:8} {one.section} [{one.model}] ({seconds:.1f} s): "
                f"{one.measured or one.reason}",
                flush=True,
            )
        free(ctx.device)


# ---- report ------------------------------------------------------------------------------
def check_mark(row: Row) -> str:
    if row.status != "ran" or row.passed is None:
        return "-"
    if row.kind == "goal":
        return "met" if row.passed else "**not met**"
    return "pass" if row.passed else "**FAIL**"


def markdown(rows: list[Row]) -> list[str]:
    lines = [
        "| Section | Model | Status | Measured | Tolerance / goal | Check |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        status = row.status if row.status == "ran" else f"{row.status}: {row.reason}"
        measured = row.measured if row.status == "ran" else ""
        lines.append(
            f"| {row.section} | {row.model} | {status} | {measured} | {row.tolerance} | "
            f"{check_mark(row)} |"
        )
    return lines


def machine(device: torch.device) -> str:
    gpu = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"no GPU, torch threads {torch.get_num_threads()}"
    )
    parts = [
        gpu,
        f"{os.cpu_count()} CPU cores",
        f"torch {torch.__version__}",
        f"transformers {transformers.__version__}",
        f"peft {engine.peft.__version__}" if engine is not None else "no peft",
        f"bitsandbytes {bnb.__version__}" if bnb is not None else "no bitsandbytes",
        f"Python {platform.python_version()}",
    ]
    return ", ".join(parts)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="small smoke run on the CPU")
    parser.add_argument(
        "--budget-s", type=float, default=420.0, help="skip sections that no longer fit"
    )
    parser.add_argument("--rounds", type=int, help="timed repetitions (default 5 CUDA, 2 CPU)")
    parser.add_argument(
        "--compile-on-cpu", action="store_true", help="with --cpu: run torch.compile too"
    )
    parser.add_argument("--json", type=Path, help="write the results as JSON to this file")
    parser.add_argument("--markdown", type=Path, help="write the table's section to this file")
    parser.add_argument(
        "--write", type=Path, help="replace the table's section in this file (docs/benchmarks.md)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    # bitsandbytes logs a line per 8-bit matmul on fp32 inputs (cast to fp16, as expected here)
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    start = STARTED
    if args.cpu:
        device = torch.device("cpu")
        torch.set_num_threads(1)  # a shared CPU: more threads wait on each other (engine.py)
    elif torch.cuda.is_available():
        device = torch.device("cuda")
        # fp32 means fp32: no TF32 in the reference
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    else:
        print(
            "no CUDA device (torch.cuda.is_available() is False): nothing to run; "
            "`--cpu` runs the CPU smoke version"
        )
        device = None
    ctx = Context(
        device=device or torch.device("cpu"),
        budget_s=args.budget_s,
        start=start,
        compile_backend="inductor" if device is not None and device.type == "cuda" else "aot_eager",
        rounds=args.rounds or (2 if args.cpu else 5),
        compile_on_cpu=args.compile_on_cpu,
    )
    if device is None:
        ctx.rows = [
            Row(title, size, status="skipped", reason="no CUDA device")
            for title, _, size, _ in plan(False)
        ]
    else:
        for missing in (BNB_MISSING, ENGINE_MISSING):
            if missing:
                print(f"note: {missing}; those sections are skipped")
        run_plan(ctx, args.cpu)
    report(args, argv, ctx, device)
    return 0


def report(args, argv: list[str], ctx: Context, device: torch.device | None) -> None:
    """Print the table; write it as JSON, as markdown, into a docs file, as asked."""
    elapsed = time.perf_counter() - ctx.start
    lines = markdown(ctx.rows)
    print("\n".join(lines))
    print(f"machine: {machine(ctx.device)}; {elapsed:.0f} s in all")
    if args.json:
        results = {
            "device": str(ctx.device) if device is not None else None,
            "machine": machine(ctx.device),
            "budget_s": args.budget_s,
            "elapsed_s": elapsed,
            "tolerances": TOL,
            "rows": [asdict(row) for row in ctx.rows],
        }
        args.json.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    heading = "### CPU smoke" if args.cpu else "### GPU run"
    command = " ".join(["PYTHONPATH=. python3 bench/gpu.py", *argv])
    body = "\n".join(
        [
            heading,
            "",
            f"Command: `{command}`",
            "",
            f"Machine: {machine(ctx.device)}; {elapsed:.0f} s in all.",
            "",
            *lines,
            *(["", CPU_NOTE] if args.cpu else []),
        ]
    )
    if args.markdown:
        args.markdown.write_text(body + "\n", encoding="utf-8")
    if args.write:
        if engine is None:
            print(f"not written to {args.write}: {ENGINE_MISSING} (use --markdown)")
        else:
            engine.write_section(args.write, body, heading)
            print(f"wrote {heading} of {args.write}")


if __name__ == "__main__":
    raise SystemExit(main())
