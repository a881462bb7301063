"""The CLI's job-array pieces (pink_client.arrays): --array checked before anything is sent,
--array-file read into one command per line, and `pink ls` folding an array into one row."""

from __future__ import annotations

import argparse

import pytest

from pink_client.arrays import array_request, counts_text, fold_rows, read_array_file
from pink_client.errors import CliError


def _args(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{"array": None, "array_file": None, **kw})


def test_array_goes_in_the_query_and_a_bad_range_is_a_usage_error():
    params, spec = {}, {}
    array_request(_args(array="0-9%2"), params, spec)
    assert params == {"array": "0-9%2"} and spec == {}
    for bad, message in (("9-0", "goes backwards"), ("1,1", "named twice"), ("x", "not an index")):
        with pytest.raises(CliError, match=message) as caught:
            array_request(_args(array=bad), {}, {})
        assert caught.value.code == 2


def test_an_array_file_gives_each_line_its_command(tmp_path):
    runs = tmp_path / "runs.txt"
    runs.write_text("# sweep\npython t.py --lr 0.1\n\npython t.py --name 'two words'\n")
    assert read_array_file(str(runs)) == [["python", "t.py", "--lr", "0.1"], ["python", "t.py", "--name", "two words"]]
    params, spec = {}, {"env": {"A": "1"}}
    array_request(_args(array="%3", array_file=str(runs)), params, spec)
    assert params == {"array": "%3"} and len(spec["array_args"]) == 2 and spec["env"] == {"A": "1"}
    for args, spec, message in (
        (_args(array="0-3", array_file=str(runs)), {}, "may only be %N"),
        (_args(array_file=str(runs)), {"command": ["x"]}, "leave out -- COMMAND"),
        (_args(array_file=str(tmp_path / "missing")), {}, "No such file"),
    ):
        with pytest.raises(CliError, match=message):
            array_request(args, {}, spec)
    (tmp_path / "bad.txt").write_text("echo 'unclosed\n")
    with pytest.raises(CliError, match="line 1"):
        read_array_file(str(tmp_path / "bad.txt"))
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(CliError, match="no command lines"):
        read_array_file(str(tmp_path / "empty.txt"))


def test_ls_folds_an_array_into_one_row_with_its_counts():
    def job(i, state, array="", index=None):
        return {"id": f"j{i}", "name": "sweep" if array else "single", "state": state, "worker": "w1",
                "gpus": 0, "created_at": 100.0 + i, "array_id": array, "array_index": index, "array_size": 3}

    jobs = [job(5, "QUEUED", "A", 2), job(4, "SUCCEEDED"), job(3, "RUNNING", "A", 1), job(2, "RUNNING", "A", 0)]
    for j in jobs:
        j["array_limit"] = 2 if j["array_id"] else 0
    rows = fold_rows(jobs, lambda j, now: [j["id"], j["name"], j["state"]], now=200.0)
    assert rows[0][:5] == ["A", "sweep [array, 3 of 3]", "1 QUEUED, 2 RUNNING", "%2", "w1"]
    assert rows[1] == ["j4", "single", "SUCCEEDED"]
    assert len(rows) == 2
    assert counts_text({"FAILED": 1, "QUEUED": 2}) == "2 QUEUED, 1 FAILED"
