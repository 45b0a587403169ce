"""bench/gpu.py's sections: fp32 and autocast steps, bitsandbytes bases, mixed-batch generate,
torch.compile, and bench/engine.py's measurements on the device. Each fills its result row."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import torch
from accelerate import Accelerator
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from bench.gpu_support import (
    BERT_SIZES,
    GENERATE,
    LLAMA_SIZES,
    QUANTIZED,
    TOL,
    Context,
    Row,
    Skip,
    check,
    free,
    gib,
    ia3_llama,
    llama,
    lm_batch,
    loss_logits_grads,
    median_time,
    peak_memory,
    rel,
    set_vectors,
    sync,
    train_step,
    wall_clock,
)
from ia3engine.config import IA3Config
from ia3engine.model import get_ia3_model
from ia3engine.training.checkpoint import rng_state
from ia3engine.training.loop import pairs_over_split_batch
from ia3engine.training.losses import pair_loss
from ia3engine.training.tasks import EncoderClassify

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


def quantized_state(model: nn.Module) -> list[torch.Tensor]:
    """The stored tensors of every quantized base layer (for the exact-unmerge check)."""
    return [t.clone() for _, layer in model.ia3_layers() for t in layer.stored_tensors()]


def bnb_section(kind: str) -> Callable:
    def section(ctx: Context, size: str, state: dict, row: Row) -> None:
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

    section.missing = BNB_MISSING  # what the plan reports as the reason to skip it
    return section


def merge_errors(model, batch, kind: str, row: Row) -> dict[str, float]:
    """merge vs unmerged output; a second merge changes nothing; unmerge restores exactly."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    model.eval()
    with torch.no_grad():
        unmerged = model(**inputs).logits.float()
        stored = quantized_state(model)
        with peak_memory(batch["input_ids"].device, row.figures, "merge_peak_bytes"):
            model.merge()
        merged = model(**inputs).logits.float()
        model.merge()
        merged_twice = model(**inputs).logits.float()
        model.unmerge()
        restored = model(**inputs).logits.float()
        same_tensors = all(
            torch.equal(a, b) for a, b in zip(stored, quantized_state(model), strict=True)
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


# ---- section: the pair objective over a split step ----------------------------------------
SPLIT_ROWS, SPLIT_TOKENS = 16, 24  # one step of 16 rows as two micro-batches of 8


def split_batches() -> list[dict[str, torch.Tensor]]:
    """Two micro-batches of random token ids (on the CPU: the task moves them), padded to
    different lengths, with labels."""
    gen = torch.Generator().manual_seed(3)
    batches = []
    for _ in range(2):
        half = SPLIT_ROWS // 2
        ids = torch.randint(1000, 30000, (half, SPLIT_TOKENS), generator=gen)
        mask = torch.ones_like(ids)
        for i, length in enumerate(torch.randint(6, SPLIT_TOKENS + 1, (half,), generator=gen)):
            mask[i, length:] = 0
        labels = torch.randint(0, 2, (half,), generator=gen)
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return batches


def split_pairs_section(ctx: Context, size: str, state: dict, row: Row) -> None:
    """The recipe's pair objective over one step split in two micro-batches: the two-pass
    gradient (`loop.pairs_over_split_batch`) against one graph over both halves, dropout live,
    so each half's masks must come back from the device's generator in its second forward."""
    device = ctx.device
    config = BertConfig(vocab_size=30522, num_labels=2, **BERT_SIZES[size])  # dropout 0.1
    torch.manual_seed(0)
    with torch.device(device):
        base = BertForSequenceClassification(config)
    model = get_ia3_model(base, IA3Config(task_type="SEQ_CLS")).train()
    set_vectors(model)
    task = EncoderClassify(None, ["a", "b"], SPLIT_TOKENS, device)
    task.use_pairs(1.0)
    batches = split_batches()
    accelerator = Accelerator(cpu=device.type == "cpu")
    trainable = [p for p in model.parameters() if p.requires_grad]

    def gradients(loss_of) -> tuple[torch.Tensor, float, dict]:
        model.zero_grad()
        torch.manual_seed(7)  # the CPU generator and every CUDA one
        value = loss_of()
        if torch.is_tensor(value):
            value.backward()
            value = value.item()
        return torch.cat([p.grad.flatten() for p in trainable]), value, rng_state()

    def one_graph() -> torch.Tensor:
        parts = [task.loss_parts(model, batch) for batch in batches]
        embeddings = torch.cat([embedding for _, embedding, _ in parts])
        labels = torch.cat([y for _, _, y in parts])
        return (parts[0][0] + parts[1][0]) / 2 + pair_loss(embeddings, labels)

    expected, value, after = gradients(one_graph)
    got, total, replayed = gradients(
        lambda: pairs_over_split_batch(model, task, batches, accelerator)
    )
    errors = {"grads": rel(got, expected), "loss": abs(total - value) / abs(value)}
    check(row, errors, {"grads": TOL["split_pairs"], "loss": TOL["split_pairs"]})
    same_generators = all(
        torch.equal(a, b)
        for key in ("torch", "cuda")
        if key in after
        for a, b in zip(_tensors(after[key]), _tensors(replayed[key]), strict=True)
    )
    row.figures["generators_replayed"] = same_generators
    row.passed = row.passed and same_generators
    row.measured += (
        "; generators end as one pass leaves them"
        if same_generators
        else "; generators **differ** after the step"
    )
    row.tolerance += "; generators equal"


def _tensors(value) -> list[torch.Tensor]:
    return list(value) if isinstance(value, list | tuple) else [value]


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


engine_section.missing = ENGINE_MISSING
