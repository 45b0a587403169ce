"""What a Predictor's per-batch work costs as adapters accumulate on one base, in process.

The bundled MiniLM, one adapter trained once (bench/serving_support.py) and added N times under
new names; torch on one thread. Prints, at each N: the mean add_adapter over the last
LOAD_WINDOW loads before N (ms; loading N adapters costs N times it if it stays flat), the
median one-row predict (ms), the median base_bytes() call (ms, the pool runs it after every
batch), base_bytes and adapter_bytes.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/serving_scaling.py 1 1000
    HF_HUB_OFFLINE=1 .venv/bin/python bench/serving_scaling.py 100 1000 3000
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.serving_support import train_seed_adapter  # noqa: E402
from ia3engine.serve.predict import Predictor  # noqa: E402

TEXT = "the film was really good today"
LOAD_WINDOW = 20  # loads averaged for the load-time column


def median_ms(call, repeats: int) -> float:
    call()  # warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main(counts: list[int]) -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = train_seed_adapter(Path(tmp))
        predictor, loaded = Predictor("minilm", task="classify", device="cpu"), 0
        for count in counts:
            load_times = []
            while loaded < count:
                start = time.perf_counter()
                predictor.add_adapter(f"a{loaded}", folder)
                load_times.append((time.perf_counter() - start) * 1000)
                loaded += 1
            window = load_times[-LOAD_WINDOW:] or [float("nan")]
            predict = median_ms(lambda: predictor.predict([TEXT], ["a0"]), 20)
            base = median_ms(predictor.base_bytes, 5)
            print(
                f"adapters={loaded} load_ms={statistics.mean(window):.1f} "
                f"predict_ms={predict:.1f} base_bytes_ms={base:.2f} "
                f"base_bytes={predictor.base_bytes()} adapter_bytes={predictor.adapter_bytes('a0')}",
                flush=True,
            )


if __name__ == "__main__":
    main(sorted(int(n) for n in sys.argv[1:]) or [1, 1000])
