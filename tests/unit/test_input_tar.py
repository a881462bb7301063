"""The web server's check of a job's input: a plain tar, held to the safe-member rules, hashed
as it streams (webapp.upload.InputArchiveChecker)."""

from __future__ import annotations

import gzip
import hashlib
import io

import pytest

from pink.errors import ImageArchiveError
from webapp.upload import InputArchiveChecker, ValidatingReader
from tests.unit.test_dockertar import M, make_tar

pytestmark = pytest.mark.unit

FOLDER = [
    M(".", kind="dir"), M("data", kind="dir"), M("data/train.csv", b"a,b\n1,2\n" * 300),
    M("data/same.csv", kind="hardlink", link="data/train.csv"),
    M("latest", kind="symlink", link="data/train.csv"), M("data/up", kind="symlink", link="../latest"),
    M("README", b"hello\n"),
]


def input_id(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def check(data: bytes, chunk: int = 4096, expected: str = ""):
    checker = InputArchiveChecker(expected)
    for i in range(0, len(data), chunk):
        checker.feed(data[i:i + chunk])
    return checker.finish()


def refused(data: bytes, *fragments: str, expected: str = "") -> str:
    with pytest.raises(ImageArchiveError) as exc:
        check(data, expected=expected)
    for fragment in fragments:
        assert fragment in str(exc.value), str(exc.value)
    return str(exc.value)


@pytest.mark.parametrize("chunk", [1, 511, 4096, 1 << 20])
def test_a_folder_with_links_is_accepted_and_named_by_its_hash(chunk):
    data = make_tar(FOLDER)
    info = check(data, chunk)
    assert info.input_id == input_id(data)
    assert info.total_bytes == len(data) and info.members == len(FOLDER) - 1  # "." is the root


def test_the_id_the_client_computed_must_match():
    data = make_tar(FOLDER)
    assert check(data, expected=input_id(data)).input_id == input_id(data)
    other = input_id(b"something else")
    msg = refused(data, other, input_id(data), expected=other)
    assert "send it again" in msg


def test_an_empty_folder_is_an_input():
    data = make_tar([M(".", kind="dir")])
    assert check(data).input_id == input_id(data)


@pytest.mark.parametrize(("member", "fragments"), [
    (M("../evil", b"x"), ("'../evil'", "'..' component")),
    (M("data/../../evil", b"x"), ("'..' component",)),
    (M("/etc/cron.d/evil", b"x"), ("absolute path",)),
    (M("out", kind="symlink", link="../../etc/passwd"), ("'out'", "outside the archive")),
    (M("abs", kind="symlink", link="/etc/passwd"), ("'abs'", "absolute path '/etc/passwd'")),
    (M("hl", kind="hardlink", link="../etc/shadow"), ("'hl'", "'..' component")),
    (M("hl", kind="hardlink", link="/etc/shadow"), ("'hl'", "absolute path")),
    (M("dev/sda", kind="chr"), ("'dev/sda'", "character device")),
    (M("pipe", kind="fifo"), ("'pipe'", "fifo")),
    (M("README", b"again"), ("'README'", "appears twice")),
])
def test_unsafe_members_are_refused_while_streaming(member, fragments):
    data = make_tar([*FOLDER, member])
    checker = InputArchiveChecker()
    with pytest.raises(ImageArchiveError) as exc:
        for i in range(0, len(data), 512):
            checker.feed(data[i:i + 512])
    for fragment in fragments:
        assert fragment in str(exc.value)


def test_a_symlink_chain_that_leaves_is_refused_at_the_end():
    refused(make_tar([*FOLDER, M("here", kind="symlink", link="."), M("away", kind="symlink", link="here/..")]),
            "'away'", "outside the archive")


def test_a_member_below_a_symlinked_folder_is_refused():
    refused(make_tar([*FOLDER, M("lnk", kind="symlink", link="data"), M("lnk/x", b"x")]), "which is a symlink")


def test_not_a_plain_tar_says_what_to_send():
    msg = refused(gzip.compress(make_tar(FOLDER)), "not a tar archive", "gzip")
    assert "tar -cf" in msg and "docker save" not in msg


def test_the_validating_reader_refuses_a_hash_mismatch_before_the_last_bytes():
    data = make_tar(FOLDER)
    reader = ValidatingReader(io.BytesIO(data), len(data), checker=InputArchiveChecker(input_id(b"x")))
    handed = 0
    with pytest.raises(ImageArchiveError, match="send it again"):
        while piece := reader.read(1000):
            handed += len(piece)
    assert handed < len(data) and reader.info is None


def test_the_validating_reader_hands_on_an_input_and_its_id():
    data = make_tar(FOLDER)
    reader = ValidatingReader(io.BytesIO(data), len(data), checker=InputArchiveChecker())
    assert reader.read() == data
    assert reader.info is not None and reader.info.input_id == input_id(data)
