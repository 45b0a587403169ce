"""Memory of a merge, with and without the copy kept for an exact unmerge, on CPU.

A tiny-but-wide net (LAYERS square linear layers of WIDTH, all targeted) as dense fp32,
bitsandbytes 8-bit and 4-bit (nf4). For each: the peak memory of merge() (keeping the
original), merge(keep_original=False) and merge_and_unload() over the memory before the call,
and the bytes a merge leaves held for unmerge. Each call runs in a fresh process: its peak
resident memory (VmHWM, reset through /proc/self/clear_refs) minus the resident memory before,
with glibc's mmap threshold fixed at 128 KiB so that a freed tensor goes back to the system at
once. Linux only. Prints a markdown table for docs/benchmarks.md ("Merging: memory").
Run: `.venv/bin/python bench/merge_memory.py [--width 2048 --layers 4]`.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import re
import subprocess
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bitsandbytes as bnb  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from ia3engine import IA3Config, get_ia3_model  # noqa: E402

KINDS = ("fp32", "int8", "nf4")
CALLS = {
    "merge()": lambda model: model.merge(),
    "merge(keep_original=False)": lambda model: model.merge(keep_original=False),
    "merge_and_unload()": lambda model: model.merge_and_unload(),
}
MIB = 2**20


def build(kind: str, width: int, layers: int) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)])
    if kind == "fp32":
        return net
    for i, layer in enumerate(net):
        if kind == "int8":
            q = bnb.nn.Linear8bitLt(width, width, has_fp16_weights=False)
        else:
            q = bnb.nn.Linear4bit(width, width, compute_dtype=torch.float32, quant_type="nf4")
        q.load_state_dict(layer.state_dict())
        net[i] = q.to("cpu")  # moving to a device is what quantizes
    return net


def wrapped(kind: str, width: int, layers: int):
    names = [str(i) for i in range(layers)]
    config = IA3Config(target_modules=names, feedforward_modules=[])
    model = get_ia3_model(build(kind, width, layers), config)
    with torch.no_grad():
        for _, layer in model.ia3_layers():
            layer.ia3_l["default"].fill_(1.5)
    return model


def weight_bytes(model) -> int:
    return sum(
        layer.base_layer.weight.untyped_storage().nbytes() for _, layer in model.ia3_layers()
    )


def kept_bytes(model) -> int:
    """Bytes held only for unmerge: dense copies, or the replaced quantized parameters."""
    total = 0
    for _, layer in model.ia3_layers():
        kept = [t for n, t in layer.named_buffers() if n.startswith("original")]
        kept += [t for t in layer.__dict__.get("_original", ()) if isinstance(t, torch.Tensor)]
        total += sum(t.untyped_storage().nbytes() for t in kept)
    return total


def resident() -> tuple[int, int]:
    """(current, peak) resident bytes of this process."""
    status = Path("/proc/self/status").read_text()
    return tuple(
        int(re.search(rf"{key}:\s+(\d+)", status).group(1)) * 1024 for key in ("VmRSS", "VmHWM")
    )


def one(kind: str, call: str, width: int, layers: int) -> dict:
    """In this process: build, then the peak over the resident memory during one call."""
    model = wrapped(kind, width, layers)
    targeted = weight_bytes(model)
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # peak := current
    before, _ = resident()
    CALLS[call](model)
    _, peak = resident()
    held = 0 if call == "merge_and_unload()" else kept_bytes(model)
    return dict(targeted=targeted, peak=peak - before, held=held)


def measure(kind: str, call: str, width: int, layers: int) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", HF_HUB_OFFLINE="1")
    command = [sys.executable, __file__, "--one", kind, call]
    command += ["--width", str(width), "--layers", str(layers)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def cell(nbytes: int, targeted: int) -> str:
    return f"{nbytes / MIB:.1f} MiB ({100 * nbytes / targeted:+.0f}%)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--one", nargs=2, metavar=("KIND", "CALL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    if args.one:
        print(json.dumps(one(*args.one, args.width, args.layers)))
        return 0
    print(
        f"{args.layers} x Linear({args.width}, {args.width}), all targeted (output scaling); "
        f"torch {torch.__version__}, bitsandbytes {bnb.__version__}, {platform.machine()}. "
        "Peak: resident memory over that before the call; held: bytes kept for unmerge "
        "after it; % of the targeted weights' own bytes.\n"
    )
    print("| Base | Targeted weights | " + " | ".join(f"{c}: peak | held" for c in CALLS) + " |")
    print("| --- | --- |" + " --- | --- |" * len(CALLS))
    for kind in KINDS:
        row = [measure(kind, call, args.width, args.layers) for call in CALLS]
        targeted = row[0]["targeted"]
        cells = [f"{cell(r['peak'], targeted)} | {cell(r['held'], targeted)}" for r in row]
        print(f"| {kind} | {targeted / MIB:.1f} MiB | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
