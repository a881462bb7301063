"""Compressed ``docker save`` archives (gzip, zstd, xz, bzip2) on the upload path, and configs
not named after their digest: the web server's check (:class:`webapp.upload.Unpacking`), the
shared decompressor (:mod:`pink.compression`), and the worker's untagging stream."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import tarfile

import pytest

from gpu_worker.untag import without_tags
from pink.compression import CompressedStreamError, Decompressor, decompressed, zstd
from pink.errors import ArchiveTooLarge, ImageArchiveError
from pink.model import Job
from pink.states import JobState
from pink_client import archive
from pink_client import main as cli
from pink_client.errors import CliError
from tests.unit.fakeapi import make_image_tar, make_layered_tar
from tests.unit.test_dockertar import LAYER_A, LAYER_B, M, check, fails, legacy_image, make_tar, oci_image, sha
from webapp import jobs as joblogic
from webapp.spec import SubmitError
from webapp.upload import Unpacking, ValidatingReader

pytestmark = pytest.mark.unit

COMPRESS = {
    "gzip": gzip.compress,
    "zstd": lambda data: zstd.compress(data, options={zstd.CompressionParameter.checksum_flag: 1}),
    "xz": lzma.compress,
    "bzip2": bz2.compress,
}


def unpack(data: bytes, chunk: int = 4096, present=(), **kw):
    checker = Unpacking(**kw)
    for i in range(0, len(data), chunk):
        checker.feed(data[i:i + chunk])
    return checker.finish(present), checker


def refused(data: bytes, *fragments: str, **kw) -> ImageArchiveError:
    with pytest.raises(ImageArchiveError) as exc:
        unpack(data, **kw)
    for fragment in fragments:
        assert fragment in str(exc.value), str(exc.value)
    return exc.value


# --------------------------------------------------------------------- the server's check


@pytest.mark.parametrize("kind", sorted(COMPRESS))
@pytest.mark.parametrize("chunk", [1, 3, 4096, 1 << 20])
def test_compressed_archives_are_checked_as_the_tar_inside(kind, chunk):
    if chunk == 1 and kind != "gzip":
        chunk = 5  # one byte at a time is slow; gzip covers it
    img = legacy_image([LAYER_A, LAYER_B])
    plain = img.tar()
    info, checker = unpack(COMPRESS[kind](plain), chunk=chunk)
    assert (info.config_digest, info.diff_ids, info.total_bytes) == (img.digest, img.diff_ids, len(plain))
    assert checker.compression == kind and checker.plain_bytes == len(plain)


def test_a_plain_tar_passes_through_and_short_uploads_get_the_tar_messages():
    info, checker = unpack(oci_image().tar(), chunk=1)
    assert info.config_digest == oci_image().digest and checker.compression == ""
    refused(b"", "empty upload")
    refused(b"\x1f\x8b", "the gzip stream is truncated")  # two bytes of a gzip header
    refused(b"abc", "not a tar archive", "shorter than one tar header")


def test_concatenated_members_are_one_stream_as_pigz_and_cat_write_them():
    plain = legacy_image().tar()
    half = len(plain) // 2
    for kind in ("gzip", "zstd", "bzip2", "xz"):
        info, _ = unpack(COMPRESS[kind](plain[:half]) + COMPRESS[kind](plain[half:]), chunk=1000)
        assert info.total_bytes == len(plain), kind


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_a_truncated_compressed_stream_is_refused_before_its_last_bytes_are_handed_on(kind):
    data = COMPRESS[kind](legacy_image().tar())
    # Cut inside the compressed data, past the end of the tar inside: only the compressed
    # stream's own end says it is incomplete.
    for cut in (7, 40):
        refused(data[:-cut], f"the {kind} stream is truncated", "upload the whole file again")
    short = data[:-7]
    reader = ValidatingReader(io.BytesIO(short), len(short), checker=Unpacking())
    handed = 0
    with pytest.raises(ImageArchiveError, match="truncated"):
        while piece := reader.read(1000):
            handed += len(piece)
    assert handed < len(short) and reader.info is None


def test_corrupt_and_trailing_data_are_refused():
    data = gzip.compress(legacy_image().tar())
    crc_broken = data[:-8] + bytes([data[-8] ^ 1]) + data[-7:]
    refused(crc_broken, "corrupt gzip data", "incorrect data check")
    refused(data + b"\0\0\0\0not gzip", "unexpected data after the end of the gzip stream")
    zdata = COMPRESS["zstd"](legacy_image().tar())
    refused(zdata[:-4] + bytes(4), "corrupt zstd data")  # the content checksum


def test_a_decompression_bomb_stops_at_the_plain_size_cap_with_memory_flat():
    big = legacy_image([LAYER_A, bytes(64 << 20)]).tar()  # a "layer" of 64 MiB of zeros
    bomb = gzip.compress(big, 9)
    assert len(bomb) < (1 << 20)
    checker = Unpacking(max_plain_bytes=8 << 20)
    with pytest.raises(ArchiveTooLarge, match="holds more than 8388608 bytes of tar"):
        checker.feed(bomb)
    assert checker.plain_bytes <= (9 << 20)  # decompressed a piece (1 MiB) at a time
    with pytest.raises(ArchiveTooLarge):  # and it stays refused
        checker.feed(b"more")
    # Under the cap it is an ordinary upload.
    assert unpack(bomb, chunk=1 << 20, max_plain_bytes=len(big))[0].total_bytes == len(big)


def test_the_decompressor_hands_out_bounded_pieces():
    data = bytes(50 << 20)
    for kind, compress in COMPRESS.items():
        d = Decompressor(kind, piece_bytes=1 << 20)
        pieces = list(d.feed(compress(data)))
        d.finish()
        assert sum(map(len, pieces)) == len(data) and max(map(len, pieces)) <= 1 << 20, kind
    with pytest.raises(CompressedStreamError, match="truncated"):
        list(decompressed([gzip.compress(data)[:1000]]))


class InboxLink:
    """A worker link that writes what the web server sends into a file (no SSH)."""

    def __init__(self, path):
        self.path, self.removed = path, False

    def get(self, worker):
        return self

    def upload(self, job_id, reader, length):
        with open(self.path, "wb") as f:
            while piece := reader.read(1 << 16):
                f.write(piece)

    def remove_upload(self, job_id):
        self.removed = True
        self.path.unlink(missing_ok=True)


def test_submit_answers_a_bomb_with_413_and_leaves_no_inbox_file(cluster, tmp_path):
    worker = cluster.add_worker()
    job = cluster.add_job(state=JobState.UPLOADING)
    bomb = gzip.compress(legacy_image([LAYER_A, bytes(32 << 20)]).tar(), 9)
    link = InboxLink(tmp_path / f"{job.id}.tar")
    with pytest.raises(SubmitError) as exc:
        joblogic._upload(cluster.store, link, worker, job, io.BytesIO(bomb), len(bomb),
                         max_plain=4 << 20)
    assert exc.value.status == 413 and "once decompressed" in str(exc.value)
    assert link.removed and not link.path.exists()
    assert cluster.store.get_job(job.id).state is JobState.FAILED


def test_submit_of_a_zstd_archive_queues_the_job_with_the_image_id(cluster, tmp_path):
    worker = cluster.add_worker()
    job: Job = cluster.add_job(state=JobState.UPLOADING)
    img = oci_image()
    data = COMPRESS["zstd"](img.tar())
    link = InboxLink(tmp_path / f"{job.id}.tar")
    queued = joblogic._upload(cluster.store, link, worker, job, io.BytesIO(data), len(data),
                              max_plain=1 << 30)
    assert queued.state is JobState.QUEUED and queued.image_id == img.digest
    assert link.path.read_bytes() == data  # the worker gets the bytes as sent


# ------------------------------------------------------ configs not named after their digest


@pytest.mark.parametrize("config_name", [f"{'0' * 64}.json", "config.json", "cfg/image-config"])
@pytest.mark.parametrize("manifest_first", [False, True])
def test_a_config_not_named_after_its_digest_is_read_by_the_manifest(config_name, manifest_first):
    img = legacy_image()
    members = [m for m in img.members if m.name not in (f"{sha(img.config)}.json", "manifest.json")]
    manifest = json.dumps([{"Config": config_name, "RepoTags": [], "Layers": img.layer_paths}]).encode()
    config = [M("cfg", kind="dir")] * config_name.startswith("cfg/") + [M(config_name, img.config)]
    meta = [M("manifest.json", manifest)] + config if manifest_first else config + [M("manifest.json", manifest)]
    img.members = meta + members if manifest_first else members + meta
    assert check(img.tar()).config_digest == img.digest == f"sha256:{sha(img.config)}"


def test_an_oci_config_blob_whose_bytes_do_not_match_its_name_gets_the_id_of_its_bytes():
    img = oci_image()
    name = f"blobs/sha256/{sha(img.config)}"
    changed = img.config + b" "
    assert check(img.replace(name, changed).tar()).config_digest == f"sha256:{sha(changed)}"


def test_a_big_config_is_kept_when_the_manifest_came_first_and_found_missing_otherwise():
    layers = [LAYER_A]
    big = json.dumps({"rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha(LAYER_A)}"]},
                      "history": [{"comment": "x" * 100} for _ in range(20000)]}).encode()
    assert len(big) > 1 << 20
    manifest = M("manifest.json", json.dumps([{"Config": "big-config", "Layers": ["l/layer.tar"]}]).encode())
    rest = [M("l", kind="dir"), M("l/layer.tar", layers[0]), M("big-config", big)]
    assert check(make_tar([manifest, *rest])).config_digest == f"sha256:{sha(big)}"
    fails(make_tar([*rest, manifest]), "image config", "not valid JSON")


# ------------------------------------------------------------------------------ the worker


@pytest.mark.parametrize("kind", sorted(COMPRESS))
def test_the_worker_loads_the_plain_untagged_tar_of_a_compressed_archive(kind):
    plain = legacy_image().tar()
    expected = b"".join(without_tags([plain]))
    data = COMPRESS[kind](plain)
    assert b"".join(without_tags(data[i:i + 999] for i in range(0, len(data), 999))) == expected
    with pytest.raises(CompressedStreamError, match="truncated"):
        b"".join(without_tags([data[:-9]]))


def test_a_plain_tar_reaches_the_worker_unchanged_by_sniffing():
    plain = oci_image().tar()
    with tarfile.open(fileobj=io.BytesIO(b"".join(without_tags([plain[:2], plain[2:]])))) as tar:
        assert "manifest.json" in tar.getnames()


# --------------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_the_cli_reads_the_id_of_a_compressed_archive_as_a_stream(tmp_path, kind):
    plain = tmp_path / "img.tar"
    image_id = make_image_tar(plain)
    packed = tmp_path / f"img.tar.{kind}"
    packed.write_bytes(COMPRESS[kind](plain.read_bytes()))
    image = archive.read_image_archive(packed)
    assert (image.image_id, image.tags, image.size) == (image_id, ("demo:latest",), packed.stat().st_size)
    assert image.diff_ids and image.layer_spans == () and image.thin_ranges(1) == []
    packed.write_bytes(COMPRESS[kind](plain.read_bytes())[:-20])
    with pytest.raises(CliError, match=f"the {kind} stream is truncated"):
        archive.read_image_archive(packed)


def test_the_cli_finds_a_big_config_that_came_before_the_manifest_in_a_second_pass(tmp_path, monkeypatch):
    plain = tmp_path / "img.tar"
    image_id = make_image_tar(plain, layer_size=1000)
    packed = tmp_path / "img.tar.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    monkeypatch.setattr(archive, "SMALL_JSON_BYTES", 10)  # the config is "too big" to keep
    assert archive.read_image_archive(packed).image_id == image_id


def test_submit_of_a_gzip_archive_sends_zero_bytes_to_a_holder_and_the_file_whole_otherwise(
        logged_in, tmp_path, capsys):
    plain = tmp_path / "img.tar"
    image_id = make_layered_tar(plain, [100_000, 5_000]) and archive.read_image_archive(plain).image_id
    packed = tmp_path / "img.tar.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    logged_in.held_layers = 1  # a thin upload would leave a layer out: not for a compressed file
    assert cli.main(["submit", str(packed)]) == 0
    [upload] = logged_in.uploads
    assert upload.body == packed.read_bytes() and "omitted_layers" not in upload.params
    logged_in.images[image_id] = ["gpu7"]
    assert cli.main(["submit", str(packed)]) == 0
    assert logged_in.uploads[-1].body == b"" and logged_in.uploads[-1].params["image"] == image_id
    assert "0 bytes sent" in capsys.readouterr().err
