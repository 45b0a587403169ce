"""bench/serving.py's adapters and load: one real MiniLM adapter trained once and registered
N times with perturbed vectors (cheap: no training per copy), Zipf(s) sampling of adapter ranks,
and closed-loop HTTP clients (each thread sends its next request when the last is answered).
"""

from __future__ import annotations

import bisect
import itertools
import random
import statistics
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from ia3engine import TrainSpec
from ia3engine.training.run import train
from jobs import adapter_files, registry
from jobs.db import writing

WORDS = ["good", "bad", "great", "dull", "fine", "awful", "lovely", "poor", "warm", "cold"]
NOUNS = ["film", "meal", "phone", "book", "hotel", "song", "game", "trip"]


def short_texts(count: int, seed: int = 0) -> list[str]:
    """Short review-like sentences (6 words), the requests' texts."""
    rng = random.Random(seed)
    return [f"the {rng.choice(NOUNS)} was really {rng.choice(WORDS)} today" for _ in range(count)]


def train_seed_adapter(root: Path, steps: int = 3) -> Path:
    """One real MiniLM classifier adapter (a few steps on 32 rows), written to root/seed."""
    root.mkdir(parents=True, exist_ok=True)
    rows = [
        f"the film was {'good' if i % 2 else 'bad'} {i},{['neg', 'pos'][i % 2]}" for i in range(32)
    ]
    data = root / "seed.csv"
    data.write_text("text,label\n" + "\n".join(rows) + "\n")
    folder = root / "seed"
    spec = TrainSpec(
        model="minilm",
        data=str(data),
        steps=steps,
        batch_size=8,
        eval_every=0,
        max_length=32,
        out_dir=str(folder),
        name="seed",
    )
    train(spec)
    return folder


def perturbed(weights: bytes, rng: torch.Generator, scale: float) -> bytes:
    """The safetensors file with every IA3 vector multiplied by 1 + scale * N(0, 1)."""
    tensors = load_tensors(weights)
    for name, tensor in tensors.items():
        if "ia3_l" in name:
            noise = torch.randn(tensor.shape, generator=rng, dtype=tensor.dtype)
            tensors[name] = (tensor * (1 + scale * noise)).contiguous()
    return save_tensors(tensors)


def register_copies(
    folder: Path, count: int, *, seed: int = 0, scale: float = 0.1, per_transaction: int = 200
) -> list[int]:
    """Register `count` copies of the adapter in `folder`, each with its own perturbed vectors
    (so each has its own sha256 and cache entry), through the registry; returns their ids."""
    files = registry.read_folder(folder)
    rng = torch.Generator().manual_seed(seed)
    ids: list[int] = []
    for start in range(0, count, per_transaction):
        with writing() as conn:
            for number in range(start, min(count, start + per_transaction)):
                copy = {
                    **files,
                    adapter_files.WEIGHTS: perturbed(files[adapter_files.WEIGHTS], rng, scale),
                }
                ids.append(registry.register_files(conn, copy, name=f"bench-{number:05d}"))
    return ids


class Zipf:
    """Ranks 0..n-1 drawn with P(rank k) proportional to 1 / (k + 1)^s."""

    def __init__(self, n: int, s: float = 1.0, seed: int = 0):
        if n < 1:
            raise ValueError("Zipf needs at least one rank")
        self.n, self.s = n, s
        self._cumulative = list(itertools.accumulate((k + 1) ** -s for k in range(n)))
        self._rng = random.Random(seed)

    def probability(self, rank: int) -> float:
        return (rank + 1) ** -self.s / self._cumulative[-1]

    def sample(self) -> int:
        point = self._rng.random() * self._cumulative[-1]
        return min(bisect.bisect_right(self._cumulative, point), self.n - 1)


def percentile(values: list[float], share: float) -> float | None:
    """The value below which `share` of `values` fall (nearest rank); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def closed_loop(url: str, headers: dict, bodies, clients: int, duration_s: float) -> dict:
    """`clients` threads, each POSTing `bodies(client, n)` to `url` and sending the next when
    answered, until `duration_s` has passed. Returns requests/s (answered 200s over the time
    until the last answer), p50/p99 latency in ms of those, and the other statuses' counts."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    statuses: list[Counter] = [Counter() for _ in range(clients)]
    ready = threading.Barrier(clients + 1)
    deadline = [0.0]

    def client(index: int) -> None:
        with httpx.Client(timeout=300, headers=headers) as http:
            http.get(url.rsplit("/", 2)[0] + "/openapi.json")  # open the connection first
            ready.wait()
            for number in itertools.count():
                if time.perf_counter() >= deadline[0]:
                    return
                start = time.perf_counter()
                try:
                    status = http.post(url, json=bodies(index, number)).status_code
                except httpx.HTTPError as error:
                    status = type(error).__name__
                statuses[index][status] += 1
                if status == 200:
                    latencies[index].append(time.perf_counter() - start)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    deadline[0] = time.perf_counter() + 3600  # set properly once every client is connected
    ready.wait()
    began = time.perf_counter()
    deadline[0] = began + duration_s
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    answered = [x for per in latencies for x in per]
    counts = sum(statuses, Counter())
    return {
        "clients": clients,
        "seconds": round(elapsed, 2),
        "requests": len(answered),
        "rps": len(answered) / elapsed,
        "p50_ms": 1000 * statistics.median(answered) if answered else None,
        "p99_ms": 1000 * percentile(answered, 0.99) if answered else None,
        "errors": {str(k): v for k, v in counts.items() if k != 200},
    }
