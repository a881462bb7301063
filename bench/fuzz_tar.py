"""Fuzzing of the upload tar validator, the full run (the security issue's property-based fuzz).

    .venv/bin/python -m bench.fuzz_tar [--cases 10000] [--seed 7]

Runs the three properties of tests/fuzz/properties.py under Hypothesis from the seed, the
cases shared evenly among them: generated valid ``docker save`` archives are accepted with the
right metadata; archives with an unsafe construction are refused; damaged archives are refused,
or accepted and still safe as tarfile and Go's archive/tar read them. ImageArchiveError is the
only exception allowed. Cases that fail do not stop the run (nothing is shrunk): they are
counted, and the first three of each property shown. The table (cases, accepted, refused, crashes,
unsafe accepted, wrong verdicts, seconds per property), the cases by kind and the failures are
printed and appended to bench/RESULTS.md. Exit status 1 when any case failed. CI runs the same
properties on about 480 fixed cases: tests/fuzz/test_tar_fuzz.py.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import hypothesis
from hypothesis import HealthCheck, Phase, given, settings

from tests.fuzz.properties import PROPERTIES, Outcome, Property

HEADER = ("| property | cases | accepted | refused | crashes | unsafe accepted | wrong verdicts "
          "| seconds |")
#: Failures of one property shown in full.
SHOWN = 3


@dataclass
class Tally:
    """The outcomes of one property's cases."""

    name: str
    cases: int = 0
    accepted: int = 0
    crashes: int = 0
    unsafe: int = 0
    wrong: int = 0
    seconds: float = 0.0
    kinds: collections.Counter = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)

    @property
    def refused(self) -> int:
        return self.cases - self.accepted

    @property
    def failed(self) -> int:
        return self.crashes + self.unsafe + self.wrong

    def add(self, outcome: Outcome, kind: str, case: object) -> None:
        self.cases += 1
        self.accepted += outcome.accepted
        self.kinds[kind] += 1
        self.crashes += outcome.crash is not None
        self.unsafe += outcome.crash is None and outcome.unsafe is not None
        self.wrong += outcome.crash is None and outcome.unsafe is None and outcome.wrong is not None
        if outcome.problem and len(self.failures) < SHOWN:
            self.failures.append(f"{self.name}: {outcome.problem}\n  case: {case!r}"[:3000])

    def row(self) -> str:
        return (f"| {self.name} | {self.cases} | {self.accepted} | {self.refused} | {self.crashes} "
                f"| {self.unsafe} | {self.wrong} | {self.seconds:.0f} |")


def fuzz(prop: Property, cases: int, seed: int) -> Tally:
    """Run ``cases`` cases of one property, generated from ``seed``."""
    tally = Tally(prop.name)

    @settings(max_examples=cases, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @hypothesis.seed(seed)
    @given(prop.cases)
    def run(case: object) -> None:
        tally.add(prop.check(case), prop.kind(case), case)

    start = time.monotonic()
    run()
    tally.seconds = time.monotonic() - start
    return tally


def report(tallies: list[Tally], args: argparse.Namespace) -> str:
    total = Tally("all", sum(t.cases for t in tallies), sum(t.accepted for t in tallies),
                  sum(t.crashes for t in tallies), sum(t.unsafe for t in tallies),
                  sum(t.wrong for t in tallies), sum(t.seconds for t in tallies))
    head = (f"## Tar validator fuzz {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} "
            f"UTC — {args.cases} cases, seed {args.seed} ({platform.node()}, {os.cpu_count()} "
            f"cores, Python {platform.python_version()}, Hypothesis {hypothesis.__version__})")
    table = [HEADER, "| --- | --- | --- | --- | --- | --- | --- | --- |",
             *(t.row() for t in tallies), total.row()]
    kinds = [f"- {t.name} cases: " + ", ".join(f"{k} ×{n}" for k, n in sorted(t.kinds.items()))
             for t in tallies]
    failures = [f for t in tallies for f in t.failures]
    lines = [head, "", *table, "", *kinds]
    if failures:
        lines += ["", "First failures:", "", "```", *failures, "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz_tar",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000,
                        help="cases in all, shared evenly by the properties")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    args = parser.parse_args(argv)
    if args.cases < len(PROPERTIES):
        parser.error(f"--cases must be at least {len(PROPERTIES)}, one per property")
    share, extra = divmod(args.cases, len(PROPERTIES))
    tallies = []
    for i, prop in enumerate(PROPERTIES):
        tallies.append(fuzz(prop, share + (i < extra), args.seed))
        print(tallies[-1].row(), flush=True)
    text = report(tallies, args)
    print()
    print(text)
    with open(args.results, "a") as f:
        f.write("\n" + text)
    return 1 if any(t.failed for t in tallies) else 0


if __name__ == "__main__":
    sys.exit(main())
