"""Property-based fuzzing of the upload tar validator: the short, deterministic run CI makes
(about 480 cases, every unsafe construction and every kind of JSON damage among them). The
full run, 10,000 cases and more from a seed of one's choice, is ``python -m bench.fuzz_tar``;
the properties are in tests/fuzz/properties.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import fuzz_tar
from tests.fuzz.attacks import ATTACKS, JSON_DAMAGE
from tests.fuzz.properties import (
    check_mutated, check_unsafe, check_valid, mutated_cases, unsafe_cases, valid_cases,
)

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
