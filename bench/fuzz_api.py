"""Schemathesis against the JSON API's OpenAPI document, the full run (the security issue's API fuzz).

    .venv/bin/python -m bench.fuzz_api [--examples 50] [--seed 7] [--url URL --token TOKEN --ca CA]

Starts an all-in-one cluster of its own (pink-aio, in a temp folder, on a free HTTPS port;
purged at the end) unless --url is given, makes a normal user and a bearer token for it (and a
throwaway user for the operations that could end the run: revoking a token, changing the
password), loads /api/v1/openapi.json and sends every operation ``--examples`` generated
requests per mode (positive: valid by the spec; negative: not) from the seed, and the admins'
operations (/users..., drain) once more with an admin's token ("(admin)" rows; the run's users are
not the admin, so a generated user name hits them only by chance). Each response goes
through Schemathesis's not_a_server_error, response_schema_conformance, status_code_conformance
and content_type_conformance, each failure counted under its check; nothing is shrunk and a
failure does not stop the run. GET /events (a stream of up to 5 minutes) is left out; with --url
and no --throwaway-token so are the throwaway user's operations, and with no --admin-token the
admin pass. The table (operations, examples,
5xx, schema mismatches, undocumented statuses, content-type mismatches, seconds) and the first
failures are printed and appended to bench/RESULTS.md. Exit status 1 when anything failed. CI runs
a few examples per operation on the Flask app through WSGI: tests/fuzz/test_api_fuzz.py.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import hypothesis
import requests
import schemathesis

from tests.fuzz import api_contract
from tests.fuzz.api_contract import Tally

HEADER = ("| operation | examples | 5xx | schema mismatches | undocumented statuses | content-type mismatches "
          "| seconds | statuses seen |")
REPO = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def own_cluster() -> Iterator[tuple[str, str, str, str, str]]:
    """An all-in-one cluster in a temp folder: (url, token, throwaway token, admin token, CA file)."""
    from pink_dev.config import run_admin_batch, token_from_output
    from pink_dev.process import free_port

    folder = Path(tempfile.mkdtemp(prefix="pink-fuzz-api-"))
    aio = [sys.executable, "-m", "pink_dev.aio"]
    try:
        subprocess.run([*aio, "up", "--dir", str(folder), "--https-port", str(free_port())], cwd=REPO,
                       check=True, stdout=subprocess.DEVNULL, timeout=300)
        cli = json.loads((folder / "cli.json").read_text())
        users = [("fuzz", []), ("fuzz-throwaway", []), ("fuzz-admin", ["--admin"])]
        outs = run_admin_batch(folder / "pink.toml", [
            *((["user", "add", name, *flags, "--password-stdin"], secrets.token_urlsafe(12) + "\n")
              for name, flags in users),
            *((["token", "create", name], None) for name, _ in users)])
        tokens = [token_from_output(out, name) for out, (name, _) in zip(outs[len(users):], users)]
        yield (cli["url"], *tokens, cli["ca_cert"])
    finally:
        subprocess.run([*aio, "down", "--dir", str(folder), "--purge"], cwd=REPO, check=False,
                       stdout=subprocess.DEVNULL, timeout=300)


def row(t: Tally) -> str:
    c = t.counts
    seen = ", ".join(f"{code} ×{n}" for code, n in sorted(t.statuses.items()))
    return (f"| {t.name} | {t.examples} | {c['5xx']} | {c['schema']} | {c['status']} | {c['content_type']} "
            f"| {t.seconds:.0f} | {seen} |")


def fuzz(url: str, token: str, throwaway: str | None, admin: str | None, ca: str | None, examples: int,
         seed: int) -> list[Tally]:
    session = requests.Session()
    session.verify = ca or True
    schema = schemathesis.openapi.from_url(f"{url}/api/v1/openapi.json", verify=session.verify,
                                           headers={"Authorization": f"Bearer {token}"})
    skip = set(api_contract.STREAMING) | (set() if throwaway else set(api_contract.THROWAWAY))
    base = f"{url}/api/v1"

    def call(case, label):
        secret = admin if label.endswith("(admin)") else throwaway if label in api_contract.THROWAWAY else token
        return case.call(base_url=base, session=session, headers={"Authorization": f"Bearer {secret}"},
                         verify=session.verify, timeout=60)

    tallies = []
    for op in api_contract.operations(schema, skip):
        tallies.append(api_contract.fuzz_operation(op, examples, seed, call))
        print(row(tallies[-1]), flush=True)
    for op in api_contract.admin_operations(schema) if admin else []:
        tallies.append(api_contract.fuzz_operation(op, examples, seed, call, as_admin=True))
        print(row(tallies[-1]), flush=True)
    return tallies


def report(tallies: list[Tally], args: argparse.Namespace, where: str) -> str:
    everything = api_contract.total(tallies)
    everything.name = f"all ({len(tallies)} operations and passes)"
    head = (f"## API fuzz (Schemathesis) {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC — "
            f"{args.examples} examples per operation and mode (positive, negative), seed {args.seed}, {where} "
            f"({platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}, Schemathesis "
            f"{schemathesis.__version__}, Hypothesis {hypothesis.__version__})")
    table = [HEADER, "| --- | --- | --- | --- | --- | --- | --- | --- |", *(row(t) for t in tallies),
             row(everything)]
    lines = [head, "", *table]
    failures = [f for t in tallies for f in t.failures] + [e for t in tallies for e in t.errors]
    if failures:
        lines += ["", "First failures (two per operation and check):", "", "```", *failures, "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz_api", description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=50, help="examples per operation and mode")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--url", help="a running PINK (https://host:port); default: start an all-in-one")
    parser.add_argument("--token", help="a normal user's bearer token (with --url)")
    parser.add_argument("--throwaway-token", help="another user's token, for revoking tokens and the "
                                                  "password change (with --url; default: those are left out)")
    parser.add_argument("--admin-token", help="an admin's token, for a second pass over the admins' "
                                              "operations (with --url; default: none)")
    parser.add_argument("--ca", help="CA certificate file of --url")
    parser.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    args = parser.parse_args(argv)
    if args.url and not args.token:
        parser.error("--url needs --token")
    if args.url:
        tallies = fuzz(args.url.rstrip("/"), args.token, args.throwaway_token, args.admin_token, args.ca,
                       args.examples, args.seed)
        where = f"against {args.url}"
    else:
        with own_cluster() as (url, token, throwaway, admin, ca):
            tallies = fuzz(url, token, throwaway, admin, ca, args.examples, args.seed)
        where = "on its own all-in-one cluster (pink-aio: nginx, gunicorn, etcd, one worker)"
    text = report(tallies, args, where)
    print()
    print(text)
    with open(args.results, "a") as f:
        f.write("\n" + text)
    return 1 if any(t.failed or t.errors for t in tallies) else 0


if __name__ == "__main__":
    sys.exit(main())
