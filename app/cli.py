"""The `ia3` command: one entry point that gathers the engine, jobs and studio commands.

Each layer registers its own subcommands; this file only assembles them, so the import
direction (app -> jobs -> ia3engine) holds for the command line too.
"""

from __future__ import annotations

import argparse
import logging
import sys

from app import access_users, studio_cli
from ia3engine import cli as engine_cli
from jobs import cli as jobs_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ia3", description="(IA)^3 tuning: train, queue, serve and share adapters."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logs")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    engine_cli.add_commands(commands)
    jobs_cli.add_commands(commands)
    studio_cli.add_commands(commands)
    access_users.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
