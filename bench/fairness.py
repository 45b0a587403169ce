"""Fairness: bob's playground latency while ann floods the same studio with predict calls.

A real `ia3 studio` with password sign-in (tests/security's harness, no worker); ann and bob
each import a one-step MiniLM adapter. Unloaded: bob's median latency over sequential calls.
Loaded: ann sends `--calls` predict calls from `--threads` threads at once (each refused call
counts: the studio answers "too many requests in flight" at once instead of queueing it) while
bob keeps calling; bob's median latency under load over unloaded is the figure (goal: <= 2x).
Both users speak raw HTTP to the named API (/gradio_api/call/predict), as any client would.
An attacker's client runs on their own machine: here ann's flood runs in its own process
pinned to the last CPU, and the studio and bob to the others (on a 1-CPU machine all share).
Run: `HF_HUB_OFFLINE=1 .venv/bin/python bench/fairness.py [--calls 500] [--threads 32]`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "tests", ROOT / "tests" / "security"):
    sys.path.insert(0, str(path))

from adapter_builds import adapter_zip, train_adapter  # noqa: E402
from attack_support import PASSWORDS, running_studio, signed_in  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402

GOAL = 2.0
TEXT = "a warm and funny film"


def predict(http, adapter_id: int) -> tuple[float, bool]:
    """(seconds, answered) of one predict call over the named API; refused calls answer fast."""
    start = time.perf_counter()
    event = http.post("/gradio_api/call/predict", json={"data": [TEXT, [adapter_id], True]})
    if event.status_code in (429, 503):  # refused as it joins: too many of this person's calls
        return time.perf_counter() - start, False
    event.raise_for_status()
    stream = http.get(f"/gradio_api/call/predict/{event.json()['event_id']}", timeout=300)
    return time.perf_counter() - start, "event: complete" in stream.text


def import_adapter(url: str, name: str, zip_path: Path, password: str) -> int:
    client = Client(url, auth=(name, password), verbose=False)
    return client.predict(handle_file(str(zip_path)), "minilm", name, api_name="/import_adapter")


def flood(url: str, adapter_id: int, calls: int, threads: int, results) -> None:
    """ann's calls, `threads` at a time, until `calls` have been answered or refused; the
    counts go to `results` (a multiprocessing queue: this runs in its own process)."""
    if len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    counts = {"answered": 0, "refused": 0, "ms_answered": [], "ms_refused": []}
    left, lock = [calls], threading.Lock()

    http = signed_in(url, "ann")  # one session for every thread, as one script would hold

    def run():
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            seconds, answered = predict(http, adapter_id)
            with lock:
                counts["answered" if answered else "refused"] += 1
                counts["ms_" + ("answered" if answered else "refused")].append(seconds * 1e3)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results.put(counts)


def bob_latencies(http, adapter_id: int, *, count: int | None = None, until=None) -> list[float]:
    times = []
    while (count is not None and len(times) < count) or (until is not None and not until()):
        seconds, answered = predict(http, adapter_id)
        assert answered, "bob's own call was refused"
        times.append(seconds)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--unloaded", type=int, default=30, help="bob's calls without load")
    args = parser.parse_args()

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:  # the studio (started below) and bob on all but the flood's CPU
        os.sched_setaffinity(0, set(cpus[:-1]))
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        zips = {
            name: adapter_zip(train_adapter(tmp / name / "adapter"), tmp / f"{name}.zip")
            for name in ("ann", "bob")
        }
        settings = {k: v for k, v in os.environ.items() if k.startswith("IA3_MAX_")}
        with running_studio(tmp, workers=0, **settings) as studio:
            ids = {n: import_adapter(studio.url, n, z, PASSWORDS[n]) for n, z in zips.items()}
            bob = signed_in(studio.url, "bob")
            bob_latencies(bob, ids["bob"], count=3)  # load the base and the adapter
            predict(signed_in(studio.url, "ann"), ids["ann"])  # and ann's, before timing
            alone = bob_latencies(bob, ids["bob"], count=args.unloaded)
            spawn = multiprocessing.get_context("spawn")
            results = spawn.Queue()
            flooding = spawn.Process(
                target=flood, args=(studio.url, ids["ann"], args.calls, args.threads, results)
            )
            start = time.perf_counter()
            flooding.start()
            got: list[dict] = []  # ann's counts, once her flood is over

            def flood_over() -> bool:
                if not got and not results.empty():
                    got.append(results.get())
                return bool(got)

            loaded = bob_latencies(bob, ids["bob"], until=flood_over)
            counts = got[0]
            flooding.join()
            seconds = time.perf_counter() - start
    unloaded_ms, loaded_ms = statistics.median(alone) * 1e3, statistics.median(loaded) * 1e3
    ratio = loaded_ms / unloaded_ms
    for key in ("ms_answered", "ms_refused"):  # ann's own median latencies
        counts[key] = round(statistics.median(counts[key])) if counts[key] else None
    print(
        json.dumps(
            {
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
                "ann_calls": args.calls,
                "ann_threads": args.threads,
                **{f"ann_{k}": v for k, v in counts.items()},
                "flood_seconds": round(seconds, 1),
                "bob_calls_unloaded": len(alone),
                "bob_calls_loaded": len(loaded),
            }
        )
    )
    print("| bob's median predict latency | ms |\n|---|---|")
    print(
        f"| alone | {unloaded_ms:.0f} |\n| while ann sends {args.calls} calls from "
        f"{args.threads} threads | {loaded_ms:.0f} |"
    )
    print(
        f"\nloaded / unloaded: {ratio:.2f}x (goal <= {GOAL:.0f}x): "
        f"{'met' if ratio <= GOAL else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
