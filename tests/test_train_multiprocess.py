"""Data-parallel training: two CPU processes (torchrun) end where one process ends."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import train_models as tm
from safetensors.torch import load_file

SCRIPT = """
import json, sys
from ia3engine import TrainSpec, train
events = []
spec = TrainSpec.from_dict(json.loads(sys.argv[1]))
result = train(spec, on_event=events.append)
started = [e for e in events if e["type"] == "started"]
if started:
    with open(sys.argv[2], "w") as handle:
        json.dump(started[0], handle)
"""


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    # no dropout: each process draws its own dropout masks, which one process cannot mirror
    model = tm.save_tiny("bert", tmp_path / "bert", dropout=0.0)
    data = tm.write_sentiment(tmp_path / "train.csv", 32)
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    spec = dict(
        model=model,
        data=data,
        eval_data=data,
        steps=4,
        lr=0.05,
        batch_size=8,
        eval_every=0,
        warmup_ratio=0.0,
        max_length=16,
        device="cpu",
        pair_weight=1.0,  # the pairs straddle the two processes: both must pair all 8 rows
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    runs = {}
    for name, launcher in (
        ("one", [sys.executable]),
        (
            "two",
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nproc_per_node",
                "2",
                "--master_port",
                "29613",
            ],
        ),
    ):
        out = tmp_path / name
        args = [json.dumps({**spec, "out_dir": str(out)}), str(tmp_path / f"{name}.json")]
        done = subprocess.run(
            launcher + [str(script)] + args, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]
        runs[name] = json.loads((tmp_path / f"{name}.json").read_text())
        runs[name]["tensors"] = load_file(str(out / "adapter_model.safetensors"))
    assert runs["one"]["processes"] == 1 and runs["two"]["processes"] == 2
    one, two = runs["one"]["tensors"], runs["two"]["tensors"]
    assert one.keys() == two.keys()
    moved = [
        k for k in one if k.endswith("ia3_l") and not torch.equal(one[k], torch.ones_like(one[k]))
    ]
    assert moved
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-5), key
