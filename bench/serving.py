"""Serving benchmark (issue 14): closed-loop HTTP load on three servers side by side.

N adapters are registered on the bundled MiniLM (one real adapter trained once, the others its
copies with perturbed vectors) in a temporary registry. Three real HTTP servers on localhost,
each its own process (bench/serving_servers.py):
- ours: `ia3 serve`'s app, requests for any adapters batched into mixed-adapter forwards;
- ceiling: the same server, every request on one adapter;
- peft: the standard way, each request alone after PEFT's `set_adapter`, under a lock.
For each C in --clients, C client threads (httpx) send one short text per request, adapters drawn
Zipf(1.0) over the N, for --seconds each, servers taking turns. Before the load: cold adapter
loads (first request of an adapter not loaded, then its second), and one request per adapter to
load all N (memory per 1,000 adapters: the cache's own byte count and the process's RSS delta).
Prints a markdown table; writes JSON to bench/out/serving.json.
Run: `HF_HUB_OFFLINE=1 .venv/bin/python bench/serving.py [--adapters 1000] [--seconds 10]`.
The default run took 15 minutes on a shared 2-core CPU, half of it PEFT loading 1,000 adapters;
`--adapters 100` takes about 2. `--no-peft` leaves the PEFT peer out (ours and the ceiling only),
for N where PEFT's loading would take hours (N = 10,000).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.serving_support import (  # noqa: E402
    Zipf,
    closed_loop,
    register_copies,
    short_texts,
    train_seed_adapter,
)
from jobs import access, api_keys  # noqa: E402

GOAL_CEILING, GOAL_PEFT, GOAL_MB = 0.9, 2.0, 100
NOT_RUN = {"rps": None, "p50_ms": None, "p99_ms": None}  # a peer left out (--no-peft)
OUT = ROOT / "bench" / "out" / "serving.json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(kind: str, env: dict, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "serving_servers.py"), kind, "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"The {kind} server stopped at start; see {log}.")
        try:
            if httpx.get(url + "/openapi.json", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.3)
    process.terminate()
    raise SystemExit(f"The {kind} server did not answer within 180 s; see {log}.")


def classify(http: httpx.Client, adapter: int) -> float:
    """Seconds for one classify of one short text with `adapter` (raises unless 200)."""
    start = time.perf_counter()
    answer = http.post("/v1/classify", json={"adapter": str(adapter), "texts": short_texts(1)})
    answer.raise_for_status()
    return time.perf_counter() - start


def cold_loads(http: httpx.Client, adapters: list[int]) -> dict:
    """Median first-request (cold) and second-request (warm) latency of `adapters`, in turn."""
    cold, warm = [], []
    for adapter in adapters:
        cold.append(classify(http, adapter))
        warm.append(classify(http, adapter))
    return {
        "adapters": len(adapters),
        "cold_ms": 1000 * statistics.median(cold),
        "warm_ms": 1000 * statistics.median(warm),
        "load_ms": 1000 * statistics.median(c - w for c, w in zip(cold, warm, strict=True)),
    }


def load_all(http: httpx.Client, adapters: list[int], threads: int = 8) -> float:
    """One request per adapter, `threads` at a time; returns the seconds it took."""
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda a: classify(http, a), adapters))
    return time.perf_counter() - start


def prepare(http: httpx.Client, ids: list[int], cold_count: int) -> dict:
    """Cold loads, then every adapter loaded; stats (RSS, cache) before and after."""
    first = classify(http, ids[0])  # loads the base
    before = http.get("/bench/stats").json()
    cold = cold_loads(http, ids[-cold_count:])
    seconds = load_all(http, ids)
    after = http.get("/bench/stats").json()
    return {"first_request_s": first, "cold": cold, "load_all_s": seconds, "stats": [before, after]}


def memory_per_1000(prepared: dict) -> dict:
    before, after = prepared["stats"]
    result = {"rss_delta_mb": None, "cache_mb": None}
    if "serve" in after:
        (b,), (a,) = before["serve"].values(), after["serve"].values()
        added = a["adapters_loaded"] - b["adapters_loaded"]
        result["adapters_added"] = added
        result["cache_mb"] = (a["adapter_bytes"] - b["adapter_bytes"]) / added * 1000 / 2**20
    else:
        added = after["adapters_loaded"] - before["adapters_loaded"]
        result["adapters_added"] = added
    result["rss_delta_mb"] = (after["rss"] - before["rss"]) / max(added, 1) * 1000 / 2**20
    return result


def bodies_for(ids: list[int], single: bool, seed: int):
    """bodies(client, n): one short text, the adapter Zipf-drawn (or always the first)."""
    samplers: dict[int, Zipf] = {}
    texts = short_texts(512, seed)

    def body(client: int, number: int) -> dict:
        if single:
            adapter = ids[0]
        else:
            sampler = samplers.setdefault(client, Zipf(len(ids), 1.0, seed * 1000 + client))
            adapter = ids[sampler.sample()]
        return {"adapter": str(adapter), "texts": [texts[(client * 7 + number) % len(texts)]]}

    return body


def fmt(value, digits=1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ratio(a: dict, b: dict) -> str:
    return "-" if a["rps"] is None or b["rps"] is None else f"{a['rps'] / b['rps']:.2f}"


def table(results: dict) -> str:
    lines = [
        "| C | ours req/s | ceiling req/s | PEFT req/s | ours p50 / p99 ms | "
        "ceiling p50 / p99 ms | PEFT p50 / p99 ms | ours / ceiling | ours / PEFT |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for point in results["points"]:
        o, c, p = point["ours"], point["ceiling"], point["peft"]
        lines.append(
            f"| {point['clients']} | {fmt(o['rps'])} | {fmt(c['rps'])} | {fmt(p['rps'])} | "
            f"{fmt(o['p50_ms'], 0)} / {fmt(o['p99_ms'], 0)} | "
            f"{fmt(c['p50_ms'], 0)} / {fmt(c['p99_ms'], 0)} | "
            f"{fmt(p['p50_ms'], 0)} / {fmt(p['p99_ms'], 0)} | "
            f"{_ratio(o, c)} | {_ratio(o, p)} |"
        )
    return "\n".join(lines)


def summary(results: dict) -> str:
    at = {p["clients"]: p for p in results["points"]}.get(32)
    mem, cold = results["memory"]["ours"], results["cold"]
    peft_ran = results.get("peft", True)
    lines = []
    if at:
        ceiling = at["ours"]["rps"] / at["ceiling"]["rps"]
        lines.append(
            f"- C=32 ours/ceiling {ceiling:.2f} (goal >= {GOAL_CEILING}: "
            f"{'met' if ceiling >= GOAL_CEILING else 'not met'})"
        )
        if peft_ran:
            peft = at["ours"]["rps"] / at["peft"]["rps"]
            lines.append(
                f"- C=32 ours/PEFT {peft:.2f} (goal >= {GOAL_PEFT}: "
                f"{'met' if peft >= GOAL_PEFT else 'not met'})"
            )
    peft_memory = (
        f"; PEFT RSS delta {fmt(results['memory']['peft']['rss_delta_mb'])} MB" if peft_ran else ""
    )
    lines.append(
        f"- memory per 1,000 adapters (ours): cache {fmt(mem['cache_mb'])} MB, RSS delta "
        f"{fmt(mem['rss_delta_mb'])} MB (goal < {GOAL_MB} MB: "
        f"{'met' if (mem['cache_mb'] or 1e9) < GOAL_MB else 'not met'} by the cache's count)"
        + peft_memory
    )
    for kind in ("ours", "peft") if peft_ran else ("ours",):
        c = cold[kind]
        lines.append(
            f"- cold adapter, {kind}: first request {fmt(c['cold_ms'])} ms, second "
            f"{fmt(c['warm_ms'])} ms, load {fmt(c['load_ms'])} ms (median of {c['adapters']}); "
            f"loading all {results['adapters']}: {fmt(results['load_all_s'][kind])} s"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace, workdir: Path) -> dict:
    threads = str(args.torch_threads)
    env = {**os.environ, "IA3_DATA_DIR": str(workdir / "data")}
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    env.pop("IA3_DATABASE_URL", None)
    env.pop("IA3_USERS", None)
    env.pop("IA3_ACCESS", None)
    os.environ.update(IA3_DATA_DIR=env["IA3_DATA_DIR"])
    os.environ.pop("IA3_DATABASE_URL", None)
    clock = time.perf_counter()
    seed = train_seed_adapter(workdir / "train", steps=3)
    trained = time.perf_counter() - clock
    ids = register_copies(seed, args.adapters, seed=args.seed)
    registered = time.perf_counter() - clock - trained
    print(
        f"trained in {trained:.1f} s; {len(ids)} adapters registered in {registered:.1f} s",
        flush=True,
    )
    _, key = api_keys.create_key("bench", actor=access.LOCAL)
    kinds = ("ours",) if args.no_peft else ("ours", "peft")
    servers = {kind: start_server(kind, env, workdir / f"{kind}.log") for kind in kinds}
    results = {
        "adapters": len(ids),
        "seconds_per_point": args.seconds,
        "torch_threads": args.torch_threads,
        "peft": not args.no_peft,
        "register_s": registered,
        "train_s": trained,
        "cold": {},
        "memory": {},
        "load_all_s": {},
        "points": [],
    }
    headers = {"Authorization": f"Bearer {key}"}
    try:
        for kind, (_, url) in servers.items():
            with httpx.Client(base_url=url, headers=headers, timeout=300) as http:
                prepared = prepare(http, ids, args.cold)
            results["cold"][kind] = prepared["cold"]
            results["load_all_s"][kind] = prepared["load_all_s"]
            results["memory"][kind] = memory_per_1000(prepared)
            results.setdefault("prepared", {})[kind] = prepared
            print(f"{kind}: prepared ({prepared['load_all_s']:.1f} s to load all)", flush=True)
        for clients in args.clients:
            point = {"clients": clients}
            for name, kind, single in (
                ("ours", "ours", False),
                ("ceiling", "ours", True),
                ("peft", "peft", False),
            ):
                if kind not in servers:
                    point[name] = NOT_RUN
                    continue
                url = servers[kind][1] + "/v1/classify"
                bodies = bodies_for(ids, single, args.seed)
                point[name] = closed_loop(url, headers, bodies, clients, args.seconds)
                print(f"C={clients} {name}: {point[name]['rps']:.1f} req/s", flush=True)
            results["points"].append(point)
        with httpx.Client(base_url=servers["ours"][1]) as http:
            results["final_stats"] = http.get("/bench/stats").json()
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(timeout=30)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapters", type=int, default=1000, help="N adapters registered")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of load per point")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--cold", type=int, default=20, help="adapters timed on a cold load")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch threads per server (OMP_NUM_THREADS): on a shared 2-core machine two "
        "threads wait for each other whenever another process holds a core",
    )
    parser.add_argument(
        "--no-peft",
        action="store_true",
        help="measure ours and the ceiling only: PEFT's server loads adapters one by one through "
        "load_adapter (483 s for 1,000 here, slower per adapter as they accumulate), so at "
        "--adapters 10000 its loading alone takes over an hour",
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.adapters < args.cold + 1:
        parser.error("--adapters must exceed --cold")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ia3-bench-serving-") as tmp:
        results = run(args, Path(tmp))
    results["machine"] = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
    }
    results["total_s"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print()
    print(table(results))
    print()
    print(summary(results))
    print(f"\nJSON: {args.out}; {results['total_s']:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
