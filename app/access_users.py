"""The password file (IA3_USERS) and `ia3 users`: add, remove and list people who may sign in.

One `name:scrypt$n$r$p$salt$hash` line per person; passwords are never stored, only their
scrypt hashes, checked in constant time (app.sign_in checks a sign-in and throttles attempts).
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import hmac
import logging
import os
import re
import secrets
import sys
from pathlib import Path

from ia3engine.errors import ConfigError

logger = logging.getLogger(__name__)

SCRYPT = {"n": 2**14, "r": 8, "p": 1}  # about 50 ms a check: cheap to sign in, dear to guess
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD = 8


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    """`scrypt$n$r$p$salt$hash` for the password, with a fresh random salt."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **SCRYPT)
    return f"scrypt${SCRYPT['n']}${SCRYPT['r']}${SCRYPT['p']}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        got = hashlib.scrypt(
            password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def read_users(path: str | Path) -> dict[str, str]:
    """name -> hash from a password file; a missing file holds no users."""
    path = Path(path)
    if not path.is_file():
        return {}
    users = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, stored = line.partition(":")
        if not sep or not NAME.match(name) or not stored.startswith("scrypt$"):
            raise ConfigError(
                f"{path}, line {number}: expected NAME:scrypt$..., as `ia3 users add` writes it."
            )
        users[name] = stored
    return users


def write_users(path: str | Path, users: dict[str, str]) -> None:
    """Replace the file atomically, readable by its owner only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    lines = ["# IA3 Studio users: name:scrypt hash. Edit with `ia3 users`."]
    lines += [f"{name}:{stored}" for name, stored in sorted(users.items())]
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    partial.replace(path)


def add_user(path: str | Path, name: str, password: str) -> None:
    """Add `name` (or change their password)."""
    if not NAME.match(name or ""):
        raise ConfigError(
            f"User name {name!r} may hold letters, digits and . _ @ - (up to 64, starting with "
            "a letter or digit)."
        )
    if len(password) < MIN_PASSWORD:
        raise ConfigError(f"The password is too short; use at least {MIN_PASSWORD} characters.")
    users = read_users(path)
    users[name] = hash_password(password)
    write_users(path, users)


# `ia3 users` --------------------------------------------------------------------------------


def add_commands(subparsers) -> None:
    """Register `users` on the `ia3` command's subparsers."""
    parser = subparsers.add_parser(
        "users",
        help="manage who may sign in to a shared studio (the IA3_USERS password file)",
        description="Add, remove or list the people in a password file for `ia3 studio`.",
    )
    actions = parser.add_subparsers(dest="users_action", required=True)
    for action, help_text in (
        ("add", "add a person, or change their password"),
        ("remove", "remove a person"),
        ("list", "list the names"),
    ):
        sub = actions.add_parser(action, help=help_text)
        if action != "list":
            sub.add_argument("name", help="the name they sign in with")
        sub.add_argument("--file", help="the password file (default: $IA3_USERS)")
        if action == "add":
            sub.add_argument(
                "--password-stdin", action="store_true", help="read the password from stdin"
            )
    parser.set_defaults(func=run_users)


def _password(args) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass(f"Password for {args.name}: ")
    if first != getpass.getpass("Again: "):
        raise ConfigError("The two passwords differ; run the command again.")
    return first


def run_users(args: argparse.Namespace) -> int:
    path = args.file or os.environ.get("IA3_USERS")
    if not path:
        print("Name the password file: --file PATH or IA3_USERS=PATH.", file=sys.stderr)
        return 2
    try:
        if args.users_action == "add":
            add_user(path, args.name, _password(args))
            print(f"{args.name} can sign in (file {path}).")
        elif args.users_action == "remove":
            users = read_users(path)
            if users.pop(args.name, None) is None:
                print(f"{args.name} is not in {path}.", file=sys.stderr)
                return 1
            write_users(path, users)
            print(f"{args.name} removed from {path}.")
        else:
            print("\n".join(sorted(read_users(path))) or f"No users in {path}.")
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    return 0
