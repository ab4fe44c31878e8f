"""Annotator accounts: a JSON file of salted scrypt password hashes, and its command line.

    python -m labeling_app.users --file configs/labeling/users.json add alice [--admin]
    python -m labeling_app.users --config configs/labeling/demo.yaml list
    python -m labeling_app.users --file configs/labeling/users.json remove alice

The password is asked for interactively (or read from standard input with
``--password-stdin``), never taken as an argument where the shell history would keep it.

File form: ``{"users": {"alice": {"salt": hex, "hash": hex, "admin": false, "n": 16384}}}``.
The server re-reads the file when it changes, so accounts can be added while it runs.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import json
import os
import re
import secrets
import sys
import threading
from pathlib import Path

from rlhf.config import ArgumentParser, run_main

from .config import load_config

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


class UsersError(ValueError):
    """A bad users file or account request; the message names the file."""


def hash_password(password: str, salt: bytes, n: int = SCRYPT_N) -> str:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P, dklen=32).hex()


def read_users(path: str | os.PathLike) -> dict[str, dict]:
    path = Path(path)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UsersError(f"{path}: malformed JSON ({err.msg} at line {err.lineno})") from None
    users = data.get("users") if isinstance(data, dict) else None
    if not isinstance(users, dict):
        raise UsersError(f"{path}: expected {{\"users\": {{name: {{salt, hash, admin}}}}}}")
    for name, record in users.items():
        if not isinstance(record, dict) or not {"salt", "hash"} <= set(record):
            raise UsersError(f"{path}: user {name!r}: expected fields 'salt' and 'hash'")
    return users


def write_private_json(path: str | os.PathLike, data: dict) -> None:
    """Atomic write, readable by the owner only (password hashes, bot passwords)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(tmp, path)


def write_users(path: str | os.PathLike, users: dict[str, dict]) -> None:
    write_private_json(path, {"users": users})


def add_user(path, name: str, password: str, admin: bool = False, n: int = SCRYPT_N) -> None:
    if not NAME_RE.match(name):
        raise UsersError(f"bad user name {name!r}: use 1-64 letters, digits, '_', '.', '@' or '-'")
    if len(password) < 8:
        raise UsersError("the password must have at least 8 characters")
    users = read_users(path)
    salt = secrets.token_bytes(16)
    users[name] = {"salt": salt.hex(), "hash": hash_password(password, salt, n), "admin": bool(admin), "n": n}
    write_users(path, users)


def remove_user(path, name: str) -> None:
    users = read_users(path)
    if name not in users:
        raise UsersError(f"{path}: no user {name!r}")
    del users[name]
    write_users(path, users)


class UserStore:
    """Checks logins against the users file, re-reading it when it changes, and remembers
    whose record changed (removed, new password, admin flag): their sessions must end."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp = None
        self._users: dict[str, dict] = {}
        self._changed: set[str] = set()
        self._reload()
        if not self._users:
            raise UsersError(f"{self.path}: no users; add one with "
                             f"`python -m labeling_app.users --file {self.path} add NAME --admin`")

    def _reload(self) -> None:
        with self._lock:
            try:
                stat = self.path.stat()
                stamp = (stat.st_mtime_ns, stat.st_size)
            except FileNotFoundError:
                stamp = None
            if stamp != self._stamp:
                users = read_users(self.path) if stamp else {}
                self._changed |= {name for name, record in self._users.items() if users.get(name) != record}
                self._users, self._stamp = users, stamp

    def changed_users(self) -> set[str]:
        """The users removed or changed since the last call (the file is checked now)."""
        self._reload()
        with self._lock:
            changed, self._changed = self._changed, set()
        return changed

    def verify(self, name: str, password: str) -> bool:
        self._reload()
        record = self._users.get(name)
        if record is None or not isinstance(password, str):
            hash_password("x", b"0" * 16)  # same work either way: no user-name probing by timing
            return False
        expected = hash_password(password, bytes.fromhex(record["salt"]), int(record.get("n", SCRYPT_N)))
        return hmac.compare_digest(expected, record["hash"])

    def is_admin(self, name: str | None) -> bool:
        self._reload()
        return bool(name) and bool(self._users.get(name, {}).get("admin"))

    def exists(self, name: str | None) -> bool:
        self._reload()
        return bool(name) and name in self._users


def _users_path(args) -> Path:
    if args.file:
        return Path(args.file)
    return load_config(args.config, check_sources=False).users


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m labeling_app.users",
                                     description="Manage the annotators who may log in to the labelling app.")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--file", help="the users file (JSON)")
    where.add_argument("--config", help="a project config; its 'users' file is used")
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="add a user or change their password")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="may see the admin page and export")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    remove = commands.add_parser("remove", help="remove a user (their votes stay)")
    remove.add_argument("name")
    commands.add_parser("list", help="list users and whether they are admins")
    try:
        args = parser.parse_args(argv)
        path = _users_path(args)
        if args.command == "add":
            if args.password_stdin:
                password = sys.stdin.readline().rstrip("\n")
            else:
                password = getpass.getpass(f"Password for {args.name}: ")
                if getpass.getpass("Again: ") != password:
                    raise UsersError("the passwords differ")
            add_user(path, args.name, password, admin=args.admin)
            print(f"{path}: user {args.name!r} saved{' (admin)' if args.admin else ''}")
        elif args.command == "remove":
            remove_user(path, args.name)
            print(f"{path}: user {args.name!r} removed")
        else:
            for name, record in sorted(read_users(path).items()):
                print(f"{name}\t{'admin' if record.get('admin') else 'annotator'}")
    except (UsersError, ValueError) as err:  # ValueError includes rlhf.config.ConfigError
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
