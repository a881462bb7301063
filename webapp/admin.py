"""``pink-admin``: server-side administration straight against etcd (users, tokens, drain).

Runs on a web server or any host with the cluster config; it needs no running web server.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import sys

from pink import config
from pink.errors import PinkError
from pink.store import Store

from . import accounts as auth


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("New password: ")
    if first != getpass.getpass("Again: "):
        raise ValueError("the two passwords differ")
    return first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pink-admin", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="cluster config file (default $PINK_CONFIG or /etc/pink/pink.toml)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    user = sub.add_parser("user", help="manage users").add_subparsers(dest="action", required=True)
    add = user.add_parser("add", help="create a user")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.add_argument("--exist-ok", action="store_true", help="succeed if the user already exists")
    passwd = user.add_parser("passwd", help="set a user's password")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true")
    user.add_parser("list", help="list users")
    token = sub.add_parser("token", help="manage API tokens").add_subparsers(dest="action", required=True)
    create = token.add_parser("create", help="create a token for a user and print it")
    create.add_argument("name")
    create.add_argument("--label", default="pink-admin")
    for verb in ("drain", "undrain"):
        p = sub.add_parser(verb, help=f"{verb} a worker")
        p.add_argument("worker")
    args = parser.parse_args(argv)

    try:
        store = Store(config.load(args.config).etcd)
        if args.cmd == "user" and args.action == "add":
            if args.exist_ok and store.get_user(args.name) is not None:
                print(f"user {args.name} already exists")
                return 0
            auth.create_user(store, args.name, _read_password(args), admin=args.admin)
            print(f"created user {args.name}{' (admin)' if args.admin else ''}")
        elif args.cmd == "user" and args.action == "passwd":
            found = store.get_user(args.name)
            if found is None:
                raise ValueError(f"no user {args.name!r}")
            password = _read_password(args)
            auth.check_new_password(password)
            store.put_user(dataclasses.replace(found, password_hash=auth.hash_password(password)))
            print(f"password of {args.name} changed")
        elif args.cmd == "user":
            for u in store.users():
                print(f"{u.name}\t{'admin' if u.admin else 'user'}")
        elif args.cmd == "token":
            if store.get_user(args.name) is None:
                raise ValueError(f"no user {args.name!r}")
            secret, _ = auth.issue_token(store, args.name, args.label)
            print(secret)
        else:
            store.set_drained(args.worker, args.cmd == "drain")
            print(f"worker {args.worker} {args.cmd}ed")
    except (PinkError, ValueError) as exc:
        print(f"pink-admin: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
