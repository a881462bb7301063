"""Property-based fuzzing of the upload tar validator: the short, deterministic run CI makes
(about 480 cases, every unsafe construction and every kind of JSON damage among them). The
full run, 10,000 cases and more from a seed of one's choice, is ``python -m bench.fuzz_tar``;
the properties are in tests/fuzz/properties.py."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import fuzz_tar
from tests.fuzz.attacks import ATTACKS, JSON_DAMAGE
from pink.compression import decompressed, zstd
from pink.errors import ImageArchiveError
from tests.fuzz.properties import (
    WHOLE, Verdict, check, check_mutated, check_unsafe, check_valid, mutated_cases, unsafe_cases,
    valid_cases,
)
from webapp.upload import Unpacking

pytestmark = pytest.mark.unit


def ci(examples: int) -> settings:
    """The same cases on every run, and no example database written."""
    return settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@ci(120)
@given(valid_cases())
def test_valid_archives_are_accepted_with_their_metadata(case) -> None:
    outcome = check_valid(case)
    assert outcome.problem is None, outcome.problem


@pytest.mark.parametrize("kind", ATTACKS)
@ci(8)
@given(data=st.data())
def test_unsafe_archives_are_refused(kind: str, data: st.DataObject) -> None:
    outcome = check_unsafe(data.draw(unsafe_cases(kind), label="case"))
    assert outcome.problem is None, outcome.problem


@ci(120)
@given(mutated_cases())
def test_mutated_archives_are_refused_or_still_safe(case) -> None:
    outcome = check_mutated(case)
    assert outcome.problem is None, outcome.problem


@pytest.mark.parametrize("json_damage", JSON_DAMAGE)
@ci(10)
@given(data=st.data())
def test_damaged_json_is_refused_or_still_safe(json_damage: str, data: st.DataObject) -> None:
    outcome = check_mutated(data.draw(mutated_cases(json_damage), label="case"))
    assert outcome.problem is None, outcome.problem


def test_the_full_run_prints_and_appends_its_table(tmp_path: Path, capsys) -> None:
    results = tmp_path / "RESULTS.md"
    assert fuzz_tar.main(["--cases", "30", "--seed", "1", "--results", str(results)]) == 0
    text = results.read_text()
    assert text.startswith("\n## Tar validator fuzz ") and "30 cases, seed 1" in text
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert table[0] == fuzz_tar.HEADER
    columns = [cell.strip() for cell in table[0].strip("|").split("|")]
    rows = {row[0]: dict(zip(columns, row)) for row in
            ([cell.strip() for cell in line.strip("|").split("|")] for line in table[2:])}
    assert list(rows) == ["valid", "unsafe", "mutated", "all"]
    assert rows["all"]["cases"] == "30" and rows["valid"]["cases"] == "10"
    assert [rows["all"][c] for c in ("crashes", "unsafe accepted", "wrong verdicts")] == ["0"] * 3
    printed = capsys.readouterr().out
    assert all(line in printed for line in table)


# ---------------------------------------------------------- compressed archives (gzip, zstd)

COMPRESS = {"gzip": lambda b: gzip.compress(b, 1), "zstd": zstd.compress}


def _unpacked(data: bytes, chunks: tuple[int, ...], present) -> Verdict:
    """The verdict of the server's check of a compressed upload (never raises)."""
    checker, pos, i = Unpacking(), 0, 0
    try:
        while pos < len(data):
            checker.feed(data[pos:pos + chunks[i % len(chunks)]])
            pos, i = pos + chunks[i % len(chunks)], i + 1
        return Verdict(info=checker.finish(present))
    except ImageArchiveError as exc:
        return Verdict(error=str(exc))
    except Exception as exc:  # the property under test: this must never happen
        return Verdict(crash=f"{type(exc).__name__}: {exc}")


@ci(60)
@given(valid_cases(), st.sampled_from(sorted(COMPRESS)), st.data())
def test_compressed_archives_read_as_the_plain_ones_and_damage_never_passes_unseen(case, kind, data):
    plain, present = case.archive.encode().data, case.archive.present
    packed = COMPRESS[kind](plain)
    assert _unpacked(packed, case.feed.chunks, present) == check(plain, WHOLE, present)
    # One flipped bit in the compressed bytes: refused, or accepted as exactly the tar the
    # worker's own decompression hands its engine (what was checked is what loads).
    pos = data.draw(st.integers(0, len(packed) - 1), label="pos")
    bit = data.draw(st.integers(0, 7), label="bit")
    damaged = packed[:pos] + bytes([packed[pos] ^ (1 << bit)]) + packed[pos + 1:]
    verdict = _unpacked(damaged, case.feed.chunks, present)
    assert verdict.crash is None, verdict.crash
    if verdict.info is not None:
        loaded = b"".join(decompressed([damaged]))
        assert check(loaded, WHOLE, present).info == verdict.info
