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
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

STARTED = time.perf_counter()  # the budget counts the imports too
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("KINETO_LOG_LEVEL", "6")  # engine.py's op counts: no profiler chatter
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from bench.gpu_sections import (  # noqa: E402
    BNB_MISSING,
    ENGINE_MISSING,
    autocast_section,
    bnb,
    bnb_section,
    compile_section,
    engine,
    engine_section,
    fp32_section,
    generate_section,
    split_pairs_section,
)
from bench.gpu_support import TOL, Context, Row, Skip, free  # noqa: E402

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


class OverBudget(Exception):
    """Raised by the alarm when --budget-s runs out inside a section."""


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
        (
            "pair objective over a split step: two passes vs one graph",
            split_pairs_section,
            bert,
            "tiny",
        ),
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
    if getattr(fn, "missing", ""):  # a package it needs is not here
        return fn.missing
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
