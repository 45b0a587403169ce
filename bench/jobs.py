"""Warm model cache: time from claim to first training step, second job on a base vs the first.

A worker keeps its last base loaded; the next job on it only resets the IA3 vectors and head.
The base is a tiny-random but wide BERT (3M-word vocabulary x 256, 770M parameters) stored in
bf16 like most Hub checkpoints and loaded in fp32 for CPU training. Each round: a fresh worker
runs a job with the model files out of the page cache (read from disk, as on a worker's first
job on a base), then a second job on the same base (warm). `--write FILE` puts the table in FILE's "Jobs" section.
Run: `HF_HUB_OFFLINE=1 .venv/bin/python bench/jobs.py [--rounds 3] [--write docs/benchmarks.md]`.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    BertTokenizer,
)

from ia3engine.training.spec import TrainSpec  # noqa: E402
from jobs import queue  # noqa: E402
from jobs.db import get_engine  # noqa: E402
from jobs.status import Status  # noqa: E402
from jobs.worker import Worker  # noqa: E402

SECTION = "## Jobs"
GOAL = 0.1
# Wide where loading costs and computing does not: a 3M-row embedding (only looked-up rows
# enter a forward pass) on one narrow layer, so the first step is cheap even on a CPU.
WIDE = {
    "vocab_size": 3_000_000,
    "hidden_size": 256,
    "num_hidden_layers": 1,
    "num_attention_heads": 4,
    "intermediate_size": 512,
}
WORDS = "good great fine love best bad awful poor hate worst the movie film plot was is".split()


def build_base(folder: Path, **shape) -> Path:
    """A random BERT classifier with a word-level tokenizer, weights stored in bf16."""
    if (folder / "config.json").is_file():
        return folder
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    config = BertConfig(max_position_embeddings=64, **shape)
    with torch.device("meta"):
        model = BertForSequenceClassification(config)
    model = model.to_empty(device="cpu").to(torch.bfloat16)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    model.save_pretrained(folder)
    BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(folder)
    # Hub checkpoints ship bf16 weights; CPU training wants fp32, which costs a conversion.
    config_path = folder / "config.json"
    values = json.loads(config_path.read_text())
    values["dtype"] = "float32"
    config_path.write_text(json.dumps(values, indent=2))
    return folder


def write_reviews(path: Path, rows: int = 16) -> str:
    lines = ["text,label"]
    for i in range(rows):
        good = i % 2 == 0
        words = WORDS[:5] if good else WORDS[5:10]
        lines.append(f"the movie was {words[i % 5]},{'pos' if good else 'neg'}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def evict(folder: Path) -> None:
    """Drop the model files from the page cache: a worker's first job on a base reads them
    from disk, unless something else read them a moment ago."""
    for path in folder.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def load_seconds(folder: Path) -> float:
    """from_pretrained from a cold page cache, as a fresh worker sees it."""
    evict(folder)
    started = time.perf_counter()
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    elapsed = time.perf_counter() - started
    del model
    gc.collect()  # unmap the files, or the next eviction leaves them cached
    return elapsed


class Clocks:
    """Wall and CPU time at the claim and at the first step event of the job being run.

    CPU time of this process is the steadier figure on a shared machine: other processes
    stealing the cores inflate wall time at random but not the work this one does.
    """

    def __init__(self):
        self.claimed: tuple[float, float] | None = None
        self.first_step: tuple[float, float] | None = None

    @staticmethod
    def now() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    def install(self, worker) -> None:
        if not getattr(queue.claim_job, "timed", False):
            claim = queue.claim_job

            def claim_job(*args, **kwargs):
                job = claim(*args, **kwargs)
                self.claimed, self.first_step = self.now(), None
                return job

            claim_job.timed = True
            queue.claim_job = claim_job
        train = worker.train_fn

        def timed_train(spec, on_event, **kwargs):
            def event(data):
                if data["type"] == "step" and self.first_step is None:
                    self.first_step = self.now()
                on_event(data)

            return train(spec, on_event=event, **kwargs)

        worker.train_fn = timed_train

    def seconds(self) -> tuple[float, float]:
        return tuple(b - a for a, b in zip(self.claimed, self.first_step, strict=True))


def claim_to_first_step(worker, clocks: Clocks, spec, db) -> tuple[float, float]:
    """(wall, CPU) seconds from the worker's claim to the job's first training step."""
    job_id = queue.enqueue(spec, db=db)
    if not worker.run_one():
        raise RuntimeError("the worker found no job to run")
    job = queue.get_job(job_id, db=db)
    if job.status != Status.DONE:
        raise RuntimeError(f"job {job_id} ended {job.status}: {job.message}")
    return clocks.seconds()


def run(rounds: int, work: Path) -> dict:
    os.environ["IA3_DATA_DIR"] = str(work / "data")
    db = get_engine(f"sqlite:///{work / 'bench.db'}")
    data = write_reviews(work / "reviews.csv")
    tiny = build_base(
        work / "tiny",
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    wide = build_base(Path(tempfile.gettempdir()) / "ia3-bench-wide-bert-3m", **WIDE)

    def spec(model, seed):
        return TrainSpec(
            model=str(model),
            data=data,
            steps=2,
            batch_size=2,
            max_length=16,
            eval_every=0,
            seed=seed,
        )

    clocks = Clocks()

    def worker():
        fresh = Worker(db, step_event_s=0)  # a fresh worker: nothing cached
        clocks.install(fresh)
        return fresh

    # Imports (transformers' BERT code, accelerate) happen once per process: not the cache.
    claim_to_first_step(worker(), clocks, spec(tiny, 0), db)
    loads = [load_seconds(wide) for _ in range(3)]
    cold, warm = [], []
    for r in range(rounds):
        each = worker()
        evict(wide)
        first = claim_to_first_step(each, clocks, spec(wide, r), db)
        second = claim_to_first_step(each, clocks, spec(wide, 100 + r), db)
        if each.base_cache.loads != 1:
            raise RuntimeError("the second job reloaded the base: the warm cache did not work")
        each.base_cache.clear()  # frees the base, so its files can leave the page cache
        cold.append(first)
        warm.append(second)
        print(
            f"round {r + 1}: wall {first[0]:.2f} -> {second[0]:.2f} s, "
            f"CPU {first[1]:.2f} -> {second[1]:.2f} s",
            flush=True,
        )
    return {"loads": loads, "cold": cold, "warm": warm}


def table(result: dict) -> str:
    def median(values, clock):
        return statistics.median(v[clock] for v in values)

    def ratio(clock):
        pairs = zip(result["warm"], result["cold"], strict=True)
        return statistics.median(w[clock] / c[clock] for w, c in pairs)

    load = statistics.median(result["loads"])
    rows = [
        "| figure | wall clock | CPU time | goal | met |",
        "|---|---|---|---|---|",
        f"| from_pretrained of the wide base (770M params, bf16 -> fp32, from disk) | {load:.2f} s | "
        f"| >= 2 s | {'yes' if load >= 2 else 'no'} |",
    ]
    for name, key in (("first job on the base", "cold"), ("second job, same worker", "warm")):
        rows.append(
            f"| {name}: claim -> first step | {median(result[key], 0):.2f} s | "
            f"{median(result[key], 1):.2f} s | | |"
        )
    rows.append(
        f"| second / first (median of {len(result['cold'])} rounds) | {ratio(0):.3f} | "
        f"{ratio(1):.3f} | <= {GOAL} | {'yes' if ratio(0) <= GOAL else 'no'} |"
    )
    return "\n".join(rows)


def write_section(path: Path, body: str) -> None:
    """Replace (or append) this benchmark's section of `path`, leaving the others alone."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == SECTION), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + body
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        new = "\n".join(lines[:start] + body.rstrip("\n").splitlines() + [""] + lines[end:])
    path.write_text(new.rstrip("\n") + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="cold + warm job pairs")
    parser.add_argument("--write", type=Path, help="put the table in this file's Jobs section")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    print(f"machine: {machine}")
    with tempfile.TemporaryDirectory() as work:
        result = run(args.rounds, Path(work))
    body = table(result)
    print(body)
    if args.write:
        command = (
            "HF_HUB_OFFLINE=1 .venv/bin/python bench/jobs.py --rounds 5 --write docs/benchmarks.md"
        )
        load = os.getloadavg()[0]
        section = (
            f"{SECTION}\n\nWarm model cache (bench/jobs.py): time from a worker's claim to the "
            "first training step, for the second job on the same base as a share of the first "
            "(the goal is judged on wall clock; CPU time of the process is the steadier figure "
            f"on a shared machine). {machine}, load average {load:.1f} during the run.\n\n"
            f"`{command}`\n\n{body}\n\n"
            "The base is a tiny-random BERT made wide where loading costs and computing does "
            "not: a 3M x 256 embedding (only looked-up rows enter a forward pass) on one narrow "
            "layer, stored in bf16 like most Hub checkpoints and loaded in fp32. Before each "
            "first job its files are dropped from the page cache, as for a worker's first job on "
            "a base. Both jobs pay the same data preparation, head start, step-0 evaluation and "
            "first step; only the first reads and converts the base. Peers (PEFT scripts, "
            "LLaMA-Factory) load the base again for every job.\n"
        )
        write_section(args.write, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
