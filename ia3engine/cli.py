"""`ia3 train`, `ia3 eval` and `ia3 predict`: thin shells over train(), Predictor and
predict_file, with a progress bar.

Errors meant for people (IA3Error) print their message and exit with code 2, no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from ia3engine.errors import IA3Error
from ia3engine.training.spec import TrainSpec

# _COMMAND_TIME: a command's handler imports the heavy part of its layer (torch, the trainer)
# when that command runs, so that building the `ia3` parser (every `ia3 ...`, `--help`) loads
# none of it: tests/test_cli_startup.py checks it. These are the only function-local imports of
# the project's own modules, and they stand only in the command-line modules.

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "data"


def add_train_arguments(parser) -> None:
    """The flags that describe a training job: shared by `ia3 train` and `ia3 submit`."""
    parser.add_argument("--model", default="minilm", help="Hub id, local folder or 'minilm'")
    parser.add_argument("--data", help="training file (CSV, TSV, JSON, JSONL, Parquet, text)")
    parser.add_argument("--eval-data", help="held-out file; default: split off the training rows")
    parser.add_argument("--task", choices=["classify", "generate"], default="classify")
    parser.add_argument("--text-column")
    parser.add_argument("--label-column")
    parser.add_argument("--template", help="prompt with {column} slots, e.g. 'Review: {text}'")
    parser.add_argument("--preset", choices=["quick", "tfew"], default="quick")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--quantize", choices=["8bit", "4bit"])
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps; default: the best available")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="adapter folder (default ./ia3-adapters/<name>)")
    parser.add_argument("--name", help="adapter name (default: from the data file and model)")
    more = parser.add_argument_group("advanced (default: the preset's value)")
    more.add_argument("--head-lr", type=float, help="learning rate of a new classification head")
    more.add_argument("--grad-accum", type=int, default=1, help="micro-batches per step")
    more.add_argument("--optimizer", choices=["adamw", "adafactor"])
    more.add_argument("--warmup-ratio", type=float)
    more.add_argument("--max-length", type=int, help="tokens per input; longer are truncated")
    more.add_argument("--eval-every", type=int, help="steps between evaluations (0: at the end)")
    more.add_argument("--early-stopping-patience", type=int)
    more.add_argument("--max-rows", type=int, help="refuse files with more training rows")
    more.add_argument(
        "--val-fraction",
        type=float,
        help="share held back for validation without --eval-data (default: 10%% from 500 rows "
        "up, none below: every row trains)",
    )
    more.add_argument("--target-modules", nargs="+", help="modules to scale (default: detected)")
    more.add_argument("--feedforward-modules", nargs="+", help="targets whose input is scaled")
    more.add_argument(
        "--no-label-rows",
        dest="label_rows",
        action="store_const",
        const=False,
        help="encoders: do not train each label's name as a row of its class",
    )


def add_commands(subparsers) -> None:
    """Register `train`, `eval` and `predict` on an argparse subparsers object."""
    train = subparsers.add_parser(
        "train",
        help="train an IA3 adapter on a dataset file",
        description="Train an IA3 adapter on a dataset file and save it in PEFT's format.",
    )
    add_train_arguments(train)
    train.add_argument(
        "--json", action="store_true", help="print one JSON object: the result (progress: stderr)"
    )
    train.add_argument(
        "--demo", action="store_true", help="train the bundled MiniLM on the sample sentiment set"
    )
    train.set_defaults(func=run_train)

    ev = subparsers.add_parser("eval", help="score an adapter (or the base alone) on a file")
    ev.add_argument("--model", default="minilm", help="Hub id, local folder or 'minilm'")
    ev.add_argument("--adapter", help="adapter folder; leave out to score the base alone")
    ev.add_argument("--data", required=True, help="file with the texts and the right answers")
    ev.add_argument("--task", choices=["classify", "generate"], default=None)
    ev.add_argument("--text-column")
    ev.add_argument("--label-column")
    ev.add_argument("--device")
    ev.add_argument("--json", action="store_true", help="print one JSON object: the scores")
    ev.set_defaults(func=run_eval)
    add_predict_command(subparsers)


def add_predict_command(subparsers) -> None:
    """`ia3 predict`: every row of a file through an adapter (or the base alone)."""
    pr = subparsers.add_parser(
        "predict",
        help="predict every row of a file with an adapter (or the base alone)",
        description="Predict every row of a CSV/JSONL/Parquet file and write the rows back, in "
        "the same format, with predicted_label and prob_<label> (classify) or generated_text.",
    )
    pr.add_argument("--model", help="base model (default: the one the adapter was trained on)")
    pr.add_argument("--adapter", help="adapter folder; leave out to use the base alone")
    pr.add_argument("--data", required=True, help="the file to predict (CSV, JSONL, Parquet, ...)")
    pr.add_argument("--out", help="output file (default: <data>.predictions.<same format>)")
    pr.add_argument("--text-column", help="column holding the text (default: guessed)")
    pr.add_argument("--batch-size", type=int, default=16, help="rows per forward pass (1-256)")
    pr.add_argument("--max-rows", type=int, help="refuse files with more rows than this")
    pr.add_argument("--max-new-tokens", type=int, default=64, help="generation: tokens (1-512)")
    pr.add_argument("--task", choices=["classify", "generate"], default=None)
    pr.add_argument("--labels", nargs="+", help="base alone: the labels to choose from")
    pr.add_argument("--device")
    pr.add_argument("--json", action="store_true", help="print one JSON object: the summary")
    pr.set_defaults(func=run_predict)


def _guarded(command):
    def run(args) -> int:
        try:
            return command(args)
        except IA3Error as err:
            if getattr(args, "json", False):
                print(json.dumps({"error": str(err)}))  # --json: stdout is one object, always
            print(f"error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return run


# ---- train ---------------------------------------------------------------------------------
def spec_from_args(args):
    """A TrainSpec from the flags of add_train_arguments (and `--demo` where offered)."""
    if getattr(args, "demo", False):
        data, eval_data = EXAMPLES / "sentiment_train.csv", EXAMPLES / "sentiment_eval.csv"
        if not data.is_file():
            raise IA3Error(f"The sample data is missing ({data}); run examples/make_samples.py.")
        args.model, args.data, args.eval_data = "minilm", str(data), str(eval_data)
        args.device = args.device or "cpu"
    if not args.data:
        raise IA3Error("--data is required (or use --demo); give a dataset file.")
    return TrainSpec(
        model=args.model,
        data=args.data,
        eval_data=args.eval_data,
        task=args.task,
        text_column=args.text_column,
        label_column=args.label_column,
        template=args.template,
        preset=args.preset,
        steps=args.steps,
        lr=args.lr,
        batch_size=args.batch_size,
        quantize=args.quantize,
        device=args.device,
        seed=args.seed,
        out_dir=args.out,
        name=args.name,
        head_lr=args.head_lr,
        grad_accum=args.grad_accum,
        optimizer=args.optimizer,
        warmup_ratio=args.warmup_ratio,
        max_length=args.max_length,
        eval_every=args.eval_every,
        early_stopping_patience=args.early_stopping_patience,
        max_rows=args.max_rows,
        val_fraction=args.val_fraction,
        target_modules=args.target_modules,
        feedforward_modules=args.feedforward_modules,
        label_rows=args.label_rows,
    )


@_guarded
def run_train(args) -> int:
    from ia3engine.training.run import train  # noqa: PLC0415 - start-up: see _COMMAND_TIME

    spec = spec_from_args(args)
    bar = ProgressBar(enabled=sys.stderr.isatty())  # stderr: --json's stdout stays one object
    result = train(spec, on_event=bar.on_event)
    bar.close()
    summary = {
        "adapter_dir": result.adapter_dir,
        "eval": result.metrics,
        "eval_before": result.metrics_before,
        "train_seconds": round(result.train_seconds, 2),
        "steps": result.steps,
        "labels": result.labels,
        "trainable_params": result.trainable_params,
    }
    if args.json:
        print(json.dumps(summary))
        return 0
    if "accuracy" in result.metrics:
        before = result.metrics_before.get("accuracy")
        if before is not None:
            print(f"accuracy before training: {before:.3f}")
        print(f"accuracy after training:  {result.metrics['accuracy']:.3f}")
    elif result.metrics:
        print(f"validation metrics: {json.dumps(result.metrics)}")
    else:  # a small file with no eval file: every row trained (the log said why)
        print(
            "no validation rows, so no score: pass --eval-data FILE (or --val-fraction) to measure"
        )
    print(f"trained {result.steps} steps in {result.train_seconds:.1f} s")
    print(f"adapter saved to {result.adapter_dir}")
    return 0


class ProgressBar:
    """One line on a terminal: a bar, step/total, loss and time left; silent elsewhere."""

    def __init__(self, enabled: bool, width: int = 30, stream=None):
        self.enabled, self.width = enabled, width
        self.stream = stream or sys.stderr
        self.last = 0.0

    def on_event(self, event: dict) -> None:
        if not self.enabled:
            return
        if event["type"] == "step":
            now = time.monotonic()
            if now - self.last < 0.1 and event["step"] < event["total_steps"]:
                return
            self.last = now
            self.stream.write("\r" + self.render(event))
            self.stream.flush()
        elif event["type"] == "eval" and event.get("metrics"):
            shown = ", ".join(f"{k} {v:.3f}" for k, v in event["metrics"].items())
            self.stream.write(f"\r\033[K  eval @ step {event['step']}: {shown}\n")
        elif event["type"] == "log":
            self.stream.write(f"\r\033[K  {event['message']}\n")

    def render(self, event: dict) -> str:
        done = event["step"] / max(event["total_steps"], 1)
        filled = int(self.width * done)
        eta = int(event.get("eta_s") or 0)
        return (
            f"[{'#' * filled}{'.' * (self.width - filled)}] {event['step']}/{event['total_steps']}"
            f"  loss {event['loss']:.4f}  ETA {eta // 60}:{eta % 60:02d}"
        )

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


# ---- eval ----------------------------------------------------------------------------------
@_guarded
def run_eval(args) -> int:
    from ia3engine.serve.evaluate import evaluate_file  # noqa: PLC0415 - start-up: see _COMMAND_TIME

    started = time.perf_counter()
    metrics = evaluate_file(
        args.model,
        args.data,
        adapter=args.adapter,
        task=args.task,
        text_column=args.text_column,
        label_column=args.label_column,
        device=args.device,
    )
    summary = {
        "model": args.model,
        "adapter": args.adapter,
        "eval": metrics,
        "seconds": round(time.perf_counter() - started, 2),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        who = f"adapter {args.adapter}" if args.adapter else f"base {args.model} (no adapter)"
        print(f"{who} on {args.data}:")
        for key, value in metrics.items():
            print(f"  {key}: {value:.4f}" if isinstance(value, float) else f"  {key}: {value}")
    return 0


# ---- predict -------------------------------------------------------------------------------
@_guarded
def run_predict(args) -> int:
    from ia3engine.serve.predict_file import predict_file  # noqa: PLC0415 - see _COMMAND_TIME

    if not args.model and not args.adapter:
        raise IA3Error("Give --model (the base alone) or --adapter (a trained adapter folder).")
    bar = RowBar(enabled=sys.stderr.isatty())
    result = predict_file(
        args.model,
        args.data,
        args.out,
        adapter=args.adapter,
        task=args.task,
        labels=args.labels,
        text_column=args.text_column,
        batch_size=args.batch_size,
        max_rows=args.max_rows,
        max_new_tokens=args.max_new_tokens,
        device=args.device,
        on_progress=bar.update,
    )
    bar.close()
    summary = {
        "out": result.out_path,
        "rows": result.rows,
        "format": result.format,
        "task": result.task,
        "text_column": result.text_column,
        "labels": result.labels,
        "truncated": result.truncated,
        "warnings": result.warnings,
        "seconds": round(result.seconds, 2),
    }
    if args.json:
        print(json.dumps(summary))
        return 0
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"predicted {result.rows:,} rows from column '{result.text_column}'")
    print(f"written to {result.out_path}")
    return 0


class RowBar:
    """Rows done of the file, on one terminal line; silent elsewhere."""

    def __init__(self, enabled: bool, stream=None):
        self.enabled, self.stream = enabled, stream or sys.stderr

    def update(self, done: int, total: int) -> None:
        if self.enabled:
            self.stream.write(f"\r  {done:,}/{total:,} rows")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def main(argv: list[str] | None = None) -> int:
    """`python -m ia3engine.cli train|eval ...` without the rest of the studio."""
    parser = argparse.ArgumentParser(prog="ia3engine", description="Train and score IA3 adapters.")
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_commands(commands)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
