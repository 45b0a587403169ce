"""What every jobs command shares: registering a parser with --json, turning errors for people
into a message and exit code 1, and printing tables or JSON."""

from __future__ import annotations

import json
import sys

from ia3engine.errors import IA3Error


def command(subparsers, name, help_, func, *, json_flag=True):
    # "resolve": flags borrowed from `ia3 train` (which has its own --json) may repeat ours.
    parser = subparsers.add_parser(name, help=help_, description=help_, conflict_handler="resolve")
    if json_flag:
        parser.add_argument(
            "--json", action="store_true", help="print one JSON document on stdout, nothing else"
        )
    parser.set_defaults(func=guarded(func))
    return parser


def guarded(func):
    """Errors meant for people become a message and exit code 1, never a traceback."""

    def run(args) -> int:
        try:
            return func(args) or 0
        except IA3Error as exc:
            if getattr(args, "json", False):
                print(json.dumps({"error": str(exc)}))
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return run


def emit(args, data, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else text)


def table(header, rows) -> str:
    cells = [tuple(str(c) for c in header)] + [tuple(str(c) for c in row) for row in rows]
    widths = [min(40, max(len(row[i]) for row in cells)) for i in range(len(header))]
    lines = ["  ".join(c[:40].ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)
