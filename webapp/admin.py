"""``pink-admin``: server-side administration straight against etcd (users, tokens, drain, quotas).

Runs on a web server or any host with the cluster config; it needs no running web server.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import sys
import time

from pink import config, fairshare, quarantine, slots
from pink.errors import PinkError
from pink.model import User
from pink.store import Store

from . import accounts as auth


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("New password: ")
    if first != getpass.getpass("Again: "):
        raise ValueError("the two passwords differ")
    return first


def _existing(store: Store, name: str) -> User:
    found = store.get_user(name)
    if found is None:
        raise ValueError(f"no user {name!r}")
    return found


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
    for verb, text in (("disable", "lock a user out now (sessions end, tokens stop working)"),
                       ("enable", "let a disabled user back in"),
                       ("delete", "delete a user with their tokens and sessions (their jobs stay)")):
        user.add_parser(verb, help=text).add_argument("name")
    token = sub.add_parser("token", help="manage API tokens").add_subparsers(dest="action", required=True)
    create = token.add_parser("create", help="create a token for a user and print it")
    create.add_argument("name")
    create.add_argument("--label", default="pink-admin")
    create.add_argument("--days", type=float, help="how long it works (default web.token_days)")
    token.add_parser("list", help="list a user's tokens").add_argument("name")
    revoke = token.add_parser("revoke", help="revoke one of a user's tokens, or all of them")
    revoke.add_argument("name")
    revoke.add_argument("id", help="the token's id, or 'all'")
    for verb in ("drain", "undrain"):
        p = sub.add_parser(verb, help=f"{verb} a worker")
        p.add_argument("worker")
    gpu = sub.add_parser("gpu", help="quarantine or release one GPU of a worker").add_subparsers(
        dest="action", required=True)
    hold = gpu.add_parser("quarantine", help="give the GPU no new jobs (jobs on it run on)")
    free = gpu.add_parser("release", help="lift an admin's quarantine of the GPU")
    for p in (hold, free):
        p.add_argument("worker")
        p.add_argument("index", type=int)
    hold.add_argument("--reason", required=True, help="why (shown by `pink workers` and the workers page)")
    worker = sub.add_parser("worker", help="change a worker live").add_subparsers(dest="action", required=True)
    live = worker.add_parser("slots", help="set how many jobs a worker runs at once, without a restart "
                                           "(lowering it stops no running job)")
    live.add_argument("worker")
    live.add_argument("slots", nargs="?", help=f"job slots, 1 to {slots.MAX_SLOTS}")
    live.add_argument("--reset", action="store_true", help="back to the worker's configured max_parallel_jobs")
    quota = sub.add_parser("quota", help="per-user GPU quotas and fair share").add_subparsers(dest="action", required=True)
    setq = quota.add_parser("set", help="cap the GPUs a user's running jobs hold on all workers (0: no limit)")
    setq.add_argument("name")
    setq.add_argument("gpus", type=int)
    quota.add_parser("reset", help="give a user the default quota (scheduling.gpu_quota) again").add_argument("name")
    quota.add_parser("list", help="each user's fair-share usage (decayed GPU-hours), GPUs held and quota")
    args = parser.parse_args(argv)

    try:
        cfg = config.load(args.config)
        store = Store(cfg.etcd)
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
            ended = store.end_sessions(args.name)
            print(f"password of {args.name} changed; {ended} browser session(s) ended")
        elif args.cmd == "user" and args.action == "list":
            for u in store.users():
                print("\t".join([u.name, "admin" if u.admin else "user", *(["disabled"] if u.disabled else [])]))
        elif args.cmd == "user" and args.action == "delete":
            if not store.delete_user(args.name):
                raise ValueError(f"no user {args.name!r}")
            print(f"deleted user {args.name} (their jobs stay)")
        elif args.cmd == "user":
            found = _existing(store, args.name)
            store.put_user(dataclasses.replace(found, disabled=args.action == "disable"))
            if args.action == "disable":
                store.end_sessions(args.name)
            print(f"user {args.name} {args.action}d")
        elif args.cmd == "token" and args.action == "create":
            _existing(store, args.name)
            days = auth.token_days(args.days, cfg.web.token_days, cfg.web.token_max_days)
            secret, _ = auth.issue_token(store, args.name, args.label, days)
            print(secret)
        elif args.cmd == "token" and args.action == "list":
            _existing(store, args.name)
            for _, t in store.tokens(args.name):
                expires = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t.expires_at)) if t.expires_at else "never"
                print(f"{t.id}\t{t.name}\texpires {expires}")
        elif args.cmd == "token":
            _existing(store, args.name)
            if args.id == "all":
                print(f"revoked {store.revoke_tokens(args.name)} token(s) of {args.name}")
            elif store.revoke_token(args.name, args.id):
                print(f"revoked token {args.id} of {args.name}")
            else:
                raise ValueError(f"{args.name} has no token {args.id}")
        elif args.cmd == "gpu":
            _gpu(store, args)
        elif args.cmd == "worker":
            _slots(store, args)
        elif args.cmd == "quota":
            _quota(store, cfg.scheduling, args)
        else:
            drain = args.cmd == "drain"
            if store.is_drained(args.worker) == drain:
                print(f"worker {args.worker} was {args.cmd}ed already")
            else:
                store.set_drained(args.worker, drain)
                print(f"worker {args.worker} {args.cmd}ed")
    except (PinkError, ValueError) as exc:
        print(f"pink-admin: {exc}", file=sys.stderr)
        return 1
    return 0


def _gpu(store: Store, args: argparse.Namespace) -> None:
    worker = store.get_worker(args.worker)
    if worker is None:
        raise ValueError(f"no worker {args.worker!r} is registered")
    if not any(g.get("index") == args.index for g in worker.gpus):
        raise ValueError(f"worker {args.worker} has no GPU {args.index}")
    if args.action == "quarantine":
        quarantine.quarantine(store, args.worker, args.index, args.reason, by=f"pink-admin ({getpass.getuser()})")
        print(f"GPU {args.index} of {args.worker} quarantined: it gets no new jobs")
    elif quarantine.release(store, args.worker, args.index):
        print(f"GPU {args.index} of {args.worker} released (a failing health check still keeps it out)")
    else:
        print(f"GPU {args.index} of {args.worker} had no admin quarantine")


def _slots(store: Store, args: argparse.Namespace) -> None:
    worker = store.get_worker(args.worker)
    if worker is None:
        raise ValueError(f"no worker {args.worker!r} is registered")
    configured = f"its configured max_parallel_jobs ({worker.slots_configured})" if worker.slots_configured \
        else "its configured max_parallel_jobs"
    if args.reset == (args.slots is not None):
        raise ValueError("give either a number of job slots or --reset")
    if args.reset:
        was_set = slots.reset(store, args.worker)
        print(f"worker {args.worker}: job slots back to {configured}" if was_set
              else f"worker {args.worker} had no live job-slot setting; it runs {configured}")
        return
    n = slots.set_slots(store, args.worker, args.slots, by=f"pink-admin ({getpass.getuser()})")
    print(f"worker {args.worker}: {n} job slot{'s' if n != 1 else ''} (until reset; {configured}); "
          f"running jobs go on, new ones start only while fewer than {n} run")


def _quota(store: Store, cfg: config.SchedulingConfig, args: argparse.Namespace) -> None:
    if args.action == "list":
        print("user\tusage_gpu_hours\tgpus_held\tgpu_quota\tset_by")
        for row in fairshare.shares(store, cfg):
            print(f"{row['user']}\t{row['usage_gpu_hours']:.1f}\t{row['gpus_held']}\t{row['gpu_quota'] or 'none'}\t"
                  f"{row['quota_set_by'] or '(default)'}")
        return
    _existing(store, args.name)
    if args.action == "reset":
        fairshare.set_quota(store, args.name, None, by="")
        print(f"GPU quota of {args.name}: the default ({cfg.gpu_quota or 'no limit'})")
        return
    fairshare.set_quota(store, args.name, args.gpus, by=f"pink-admin ({getpass.getuser()})")
    print(f"GPU quota of {args.name}: {args.gpus or 'no limit'} (workers apply it within a minute)")


if __name__ == "__main__":
    sys.exit(main())
