"""What bench/gpu.py's sections share: the models (Llamas and BERTs from configs with random
weights), batches, the IA3 vectors, tolerances, timing and memory on the device, the result row."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

from ia3engine.config import IA3Config
from ia3engine.model import get_ia3_model
from ia3engine.wrappers import is_adapter_param

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
    # fp32, the same dropout masks replayed: only summation order differs (expected ~1e-7)
    "split_pairs": 1e-5,
}


class Skip(Exception):
    """A section that cannot run here; the message says why."""


@dataclass
class Row:
    """One line of the table: a section on one model, and what it found."""

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
    """What every section is given: the device, the budget, the timed repetitions."""

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
