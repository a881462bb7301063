"""Tests of the streaming docker-save validator, on archives built in memory."""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
import time
from dataclasses import dataclass, field

import pytest

from webapp.upload import ImageArchiveChecker, ImageInfo, ValidatingReader
from pink.errors import ImageArchiveError


# ------------------------------------------------------------------------------ builders


@dataclass
class M:
    """One tar member to write: kind is file, dir, symlink, hardlink, chr, fifo."""

    name: str
    data: bytes = b""
    kind: str = "file"
    link: str = ""


_TYPES = {
    "file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE,
}


def make_tar(
    members: list[M], fmt: int = tarfile.PAX_FORMAT, pax_headers: dict | None = None
) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, pax_headers=pax_headers) as tar:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.type = _TYPES[m.kind]
            info.mtime = 1_700_000_000
            info.mode = 0o755 if m.kind == "dir" else 0o644
            if m.kind == "file":
                info.size = len(m.data)
                tar.addfile(info, io.BytesIO(m.data))
            else:
                info.linkname = m.link
                tar.addfile(info)
    return buf.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def layer(files: dict[str, bytes]) -> bytes:
    return make_tar([M(name, data) for name, data in files.items()])


LAYER_A = layer({"bin/hello": b"#!/bin/sh\necho hello\n", "etc/passwd": b"root:x:0:0::/:/bin/sh\n"})
LAYER_B = layer({"data/blob": bytes(range(256)) * 40})


def config_for(layers: list[bytes], extra: dict | None = None) -> bytes:
    cfg = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/hello"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha(lay)}" for lay in layers]},
        **(extra or {}),
    }
    return json.dumps(cfg, separators=(",", ":")).encode()


@dataclass
class Image:
    members: list[M]
    config: bytes
    layers: list[bytes]
    layer_paths: list[str]
    tags: list[str] = field(default_factory=lambda: ["sample:1"])

    def tar(self, fmt: int = tarfile.PAX_FORMAT, **kw) -> bytes:
        return make_tar(self.members, fmt, **kw)

    @property
    def digest(self) -> str:
        return f"sha256:{sha(self.config)}"

    @property
    def diff_ids(self) -> tuple[str, ...]:
        return tuple(f"sha256:{sha(lay)}" for lay in self.layers)

    def without(self, name: str) -> "Image":
        self.members = [m for m in self.members if m.name != name]
        return self

    def replace(self, name: str, data: bytes) -> "Image":
        self.members = [M(name, data) if m.name == name else m for m in self.members]
        return self


def legacy_image(layers: list[bytes] | None = None, dir_prefix: str = "") -> Image:
    """Docker <= 24 layout: <id>/layer.tar with symlinks for repeats, manifest.json last."""
    layers = [LAYER_A, LAYER_B, LAYER_A] if layers is None else layers
    members: list[M] = []
    paths: list[str] = []
    first_dir: dict[bytes, str] = {}
    for i, lay in enumerate(layers):
        d = dir_prefix + sha(lay + bytes([i]))
        members += [M(d, kind="dir"), M(f"{d}/VERSION", b"1.0"), M(f"{d}/json", b"{}")]
        if lay in first_dir:
            # As Docker 20.10 writes a repeated layer.
            target = f"../{first_dir[lay].rsplit('/', 1)[-1]}/layer.tar"
            members.append(M(f"{d}/layer.tar", kind="symlink", link=target))
        else:
            first_dir[lay] = d
            members.append(M(f"{d}/layer.tar", lay))
        paths.append(f"{d}/layer.tar")
    config = config_for(layers)
    cfg_name = f"{sha(config)}.json"
    manifest = [{"Config": cfg_name, "RepoTags": ["sample:1"], "Layers": paths}]
    members += [
        M(cfg_name, config),
        M("manifest.json", json.dumps(manifest).encode()),
        M("repositories", b'{"sample":{"1":"x"}}'),
    ]
    return Image(members, config, layers, paths)


def oci_image(layers: list[bytes] | None = None) -> Image:
    """Docker >= 25 layout: blobs/sha256/<hex> for layers, config and OCI manifest."""
    layers = [LAYER_A, LAYER_B] if layers is None else layers
    config = config_for(layers)
    blobs = {sha(lay): lay for lay in layers}
    blobs[sha(config)] = config
    oci_manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": f"sha256:{sha(config)}", "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": f"sha256:{sha(lay)}", "size": len(lay)} for lay in layers],
    }).encode()
    blobs[sha(oci_manifest)] = oci_manifest
    members = [M("blobs", kind="dir"), M("blobs/sha256", kind="dir")]
    members += [M(f"blobs/sha256/{h}", data) for h, data in blobs.items()]
    paths = [f"blobs/sha256/{sha(lay)}" for lay in layers]
    index = {"schemaVersion": 2, "manifests": [{"digest": f"sha256:{sha(oci_manifest)}"}]}
    manifest = [
        {"Config": f"blobs/sha256/{sha(config)}", "RepoTags": ["sample:1"], "Layers": paths}
    ]
    members += [
        M("index.json", json.dumps(index).encode()),
        M("manifest.json", json.dumps(manifest).encode()),
        M("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
        M("repositories", b'{"sample":{"1":"x"}}'),
    ]
    return Image(members, config, layers, paths)


def check(data: bytes, chunk: int = 1 << 20, present=(), **kw) -> ImageInfo:
    checker = ImageArchiveChecker(**kw)
    for i in range(0, len(data), chunk):
        checker.feed(data[i : i + chunk])
    return checker.finish(present)


def offsets(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar.getmembers()}


def end_of_members(data: bytes) -> int:
    last = max(offsets(data).values(), key=lambda m: m.offset)
    return last.offset_data + (0 if not last.isreg() else -(-last.size // 512) * 512)


def fails(data: bytes, *fragments: str, in_feed: bool = False, **kw) -> str:
    """Assert the archive is refused with a message holding every fragment.

    in_feed: the error must come from feed(), i.e. before the upload has ended.
    """
    present = kw.pop("present", ())
    checker = ImageArchiveChecker(**kw)
    with pytest.raises(ImageArchiveError) as exc:
        for i in range(0, len(data), 4096):
            checker.feed(data[i : i + 4096])
        if in_feed:
            pytest.fail("feed() accepted the whole archive")
        checker.finish(present)
    msg = str(exc.value)
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"
    return msg


# -------------------------------------------------------------------------- valid images


def test_legacy_layout_with_repeated_layer_symlink_and_manifest_last() -> None:
    img = legacy_image()
    data = img.tar()
    assert [m.name for m in img.members][-2] == "manifest.json"
    info = check(data)
    assert info.config_digest == img.digest
    assert info.repo_tags == ("sample:1",)
    assert info.diff_ids == img.diff_ids
    assert info.layer_paths == tuple(img.layer_paths)
    assert info.missing_layers == ()
    assert info.total_bytes == len(data)


def test_oci_layout() -> None:
    img = oci_image()
    info = check(img.tar())
    assert info.config_digest == img.digest
    assert info.layer_paths == tuple(img.layer_paths)
    assert info.diff_ids == img.diff_ids


@pytest.mark.parametrize("build", [legacy_image, oci_image])
@pytest.mark.parametrize("chunk", [1, 7, 512, 1 << 20])
def test_chunk_boundaries_do_not_matter(build, chunk: int) -> None:
    data = build().tar()
    assert check(data, chunk=chunk) == check(data, chunk=len(data))


def test_memoryview_chunks_and_bytes_seen() -> None:
    data = legacy_image().tar()
    checker = ImageArchiveChecker()
    view = memoryview(data)
    for i in range(0, len(data), 1000):
        checker.feed(view[i : i + 1000])
    assert checker.bytes_seen == len(data)
    assert checker.finish().total_bytes == len(data)


def test_trailing_zero_padding_is_tolerated() -> None:
    img = legacy_image()
    assert check(img.tar() + bytes(12345)).config_digest == img.digest


def test_pax_long_names_and_global_header() -> None:
    img = legacy_image(dir_prefix="d" * 150 + "/")
    data = img.tar(tarfile.PAX_FORMAT, pax_headers={"comment": "global header"})
    assert b"path=" + b"d" * 150 in data and b"comment=global" in data
    info = check(data)
    assert info.layer_paths[0].startswith("d" * 150 + "/")
    assert info.config_digest == img.digest


def test_gnu_long_names_and_long_link() -> None:
    img = legacy_image(dir_prefix="g" * 150 + "/")
    data = img.tar(tarfile.GNU_FORMAT)
    assert b"././@LongLink" in data
    info = check(data, chunk=7)
    assert info.layer_paths == tuple(img.layer_paths)


def _patch_header(data: bytearray, offset: int, start: int, value: bytes) -> None:
    block = data[offset : offset + 512]
    block[start : start + len(value)] = value
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    data[offset : offset + 512] = block


def test_pax_size_overrides_header_size() -> None:
    img = legacy_image()
    blob = b"{}" + b" " * 3000
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("big.json")
        info.size = len(blob)
        info.pax_headers = {"size": str(len(blob))}
        tar.addfile(info, io.BytesIO(blob))
    head = bytearray(buf.getvalue())
    member_header = offsets(bytes(head))["big.json"].offset_data - 512
    _patch_header(head, member_header, 124, b"00000000000\0")  # ustar size says 0
    rest = img.tar()
    data = bytes(head[: end_of_members(buf.getvalue())]) + rest
    assert check(data).config_digest == img.digest
    # Without the pax record the 3002 bytes would be read as headers and fail.
    assert b"size=3002" in data


def test_large_layer_costs_little_cpu() -> None:
    size = 1 << 30
    header = tarfile.TarInfo("0" * 64 + "/layer.tar")
    header.size = size
    head = header.tobuf(tarfile.PAX_FORMAT)
    chunk = bytes(1 << 20)
    checker = ImageArchiveChecker()
    start = time.process_time()
    checker.feed(head)
    for _ in range(size >> 20):
        checker.feed(chunk)
    elapsed = time.process_time() - start
    assert checker.bytes_seen == len(head) + size
    assert elapsed < 0.5, f"1 GiB layer took {elapsed:.2f}s of CPU"


# ------------------------------------------------------------------------------ not tars


def test_random_bytes_are_not_a_tar() -> None:
    data = random.Random(4).randbytes(10_000)
    fails(data, "not a tar archive", "docker save", in_feed=True)


def test_short_input_is_not_a_tar() -> None:
    fails(b"hello world\n", "not a tar archive", "12 bytes")


def test_empty_upload() -> None:
    fails(b"", "empty upload")


def test_empty_tar_has_no_files() -> None:
    fails(make_tar([]), "contains no files")
    fails(make_tar([], pax_headers={"comment": "only a global header"}), "contains no files")


# ---------------------------------------------------------------------------- truncation


def test_truncated_in_header() -> None:
    data = legacy_image().tar()
    cut = offsets(data)["manifest.json"].offset + 100
    fails(data[:cut], "truncated", "in the middle of a tar header")


def test_truncated_in_data() -> None:
    data = legacy_image().tar()
    info = offsets(data)["manifest.json"]
    fails(data[: info.offset_data + 10], "truncated",
          "ends in the middle of member 'manifest.json'", f"got 10 of {info.size} bytes")


def test_truncated_in_padding() -> None:
    data = legacy_image().tar()
    info = offsets(data)["manifest.json"]
    assert info.size % 512
    fails(data[: info.offset_data + info.size + 1], "padding after member 'manifest.json'")


def test_missing_end_blocks() -> None:
    data = legacy_image().tar()
    end = end_of_members(data)
    fails(data[:end], "truncated", "without the end-of-archive marker",
          "after member 'repositories'")
    fails(data[: end + 512], "truncated", "end-of-archive marker")


def test_checker_stays_failed_and_reports_the_same_error() -> None:
    checker = ImageArchiveChecker()
    with pytest.raises(ImageArchiveError, match="not a tar archive"):
        checker.feed(bytes(range(256)) * 4)
    with pytest.raises(ImageArchiveError, match="not a tar archive"):
        checker.feed(b"more")
    with pytest.raises(ImageArchiveError, match="not a tar archive"):
        checker.finish()


def test_corrupt_header_checksum_mid_archive() -> None:
    data = bytearray(legacy_image().tar())
    data[offsets(bytes(data))["manifest.json"].offset + 3] ^= 0x20
    fails(bytes(data), "bad header checksum", "corrupt tar archive", in_feed=True)


def test_garbage_after_end_of_archive() -> None:
    fails(legacy_image().tar() + b"PK\x03\x04", "unexpected data after the end of the tar archive",
          in_feed=True)


# ------------------------------------------------------------------------------- safety


def _with(member: M, image: Image | None = None) -> bytes:
    img = image or legacy_image()
    img.members.insert(1, member)
    return img.tar()


def test_absolute_path() -> None:
    fails(_with(M("/etc/cron.d/evil", b"x")), "'/etc/cron.d/evil'", "absolute path", in_feed=True)


def test_dotdot_component() -> None:
    fails(_with(M("a/../../evil", b"x")), "'a/../../evil'", "'..' component", in_feed=True)


def test_nul_in_pax_name() -> None:
    fails(_with(M("x" * 120 + "\0evil", b"x")), "NUL", in_feed=True)


def test_symlink_absolute_target() -> None:
    fails(_with(M("etc-link", kind="symlink", link="/etc")), "'etc-link'",
          "absolute path '/etc'", in_feed=True)


def test_symlink_relative_escape() -> None:
    fails(_with(M("a/b/up", kind="symlink", link="../../../etc/passwd")), "'a/b/up'",
          "outside the archive", in_feed=True)


def test_symlink_inside_archive_with_dotdot_is_fine() -> None:
    img = legacy_image()
    img.members.insert(1, M("a/b/ok", kind="symlink", link="../../manifest.json"))
    assert check(img.tar()).config_digest == img.digest


def test_symlink_chain_escape_found_at_finish() -> None:
    img = legacy_image()
    img.members[1:1] = [
        M("here", kind="symlink", link="."), M("away", kind="symlink", link="here/..")
    ]
    fails(img.tar(), "'away'", "outside the archive")


def test_member_below_a_symlinked_directory() -> None:
    img = legacy_image()
    img.members[1:1] = [
        M("sub", kind="dir"), M("lnk", kind="symlink", link="sub"), M("lnk/file", b"x")
    ]
    fails(img.tar(), "'lnk/file'", "which is a symlink", in_feed=True)


def test_hardlink_escape() -> None:
    fails(_with(M("hl", kind="hardlink", link="../etc/shadow")), "'hl'", "'..' component",
          in_feed=True)
    fails(_with(M("hl", kind="hardlink", link="/etc/shadow")), "'hl'", "absolute path",
          in_feed=True)


def test_hardlink_to_unseen_member() -> None:
    fails(_with(M("hl", kind="hardlink", link="manifest.json")), "hardlink 'hl'",
          "not a file earlier", in_feed=True)


def test_hardlinked_layer_is_accepted() -> None:
    img = legacy_image([LAYER_A, LAYER_A])
    first, second = img.layer_paths
    img.members = [M(second, kind="hardlink", link=first) if m.name == second else m
                   for m in img.members]
    assert check(img.tar()).config_digest == img.digest


@pytest.mark.parametrize("kind,word", [("chr", "character device"), ("fifo", "fifo")])
def test_device_and_fifo_members(kind: str, word: str) -> None:
    fails(_with(M("dev/thing", kind=kind)), "'dev/thing'", word, in_feed=True)


def test_duplicate_member() -> None:
    img = legacy_image()
    img.members.append(M("manifest.json", b"[]"))
    fails(img.tar(), "'manifest.json'", "appears twice", in_feed=True)


def test_duplicate_after_normalisation() -> None:
    img = legacy_image()
    img.members.insert(0, M("./repositories", b"{}"))
    fails(img.tar(), "'repositories'", "appears twice", in_feed=True)


# ---------------------------------------------------------------------- docker metadata


def test_missing_manifest() -> None:
    fails(legacy_image().without("manifest.json").tar(), "manifest.json", "missing")


def test_manifest_not_json() -> None:
    data = legacy_image().replace("manifest.json", b"[not json").tar()
    fails(data, "manifest.json", "not valid JSON")


def test_manifest_points_at_missing_layer() -> None:
    img = legacy_image([LAYER_A, LAYER_B])
    fails(img.without(img.layer_paths[1]).tar(), "layer", img.layer_paths[1],
          "missing from the archive")


def test_missing_config() -> None:
    img = legacy_image()
    fails(img.without(f"{sha(img.config)}.json").tar(), "image config", "missing from the archive")


def test_diff_ids_and_layers_count_mismatch() -> None:
    img = legacy_image([LAYER_A, LAYER_B])
    manifest = [
        {"Config": f"{sha(img.config)}.json", "RepoTags": [], "Layers": img.layer_paths[:1]}
    ]
    fails(img.replace("manifest.json", json.dumps(manifest).encode()).tar(),
          "lists 2 layers", "manifest.json lists 1")


def test_two_images_in_one_archive() -> None:
    img = legacy_image()
    entry = {"Config": f"{sha(img.config)}.json", "RepoTags": ["a:1"], "Layers": img.layer_paths}
    fails(img.replace("manifest.json", json.dumps([entry, entry]).encode()).tar(),
          "holds 2 images", "exactly one image")


def test_manifest_entry_without_layers() -> None:
    img = legacy_image()
    bad = json.dumps([{"Config": f"{sha(img.config)}.json"}]).encode()
    fails(img.replace("manifest.json", bad).tar(), "no Config or no Layers")


def test_thin_archive() -> None:
    img = legacy_image([LAYER_A, LAYER_B])
    for path in img.layer_paths:
        img.without(path)
    data = img.tar()
    fails(data, "missing from the archive", img.diff_ids[0])
    info = check(data, present=set(img.diff_ids))
    assert info.missing_layers == img.diff_ids
    assert info.config_digest == img.digest
    # Only one layer held: the other must still be in the archive.
    fails(data, img.diff_ids[1], present={img.diff_ids[0]})
    assert img.diff_ids[0] not in fails(data, present={img.diff_ids[0]})


def test_metadata_cap() -> None:
    img = legacy_image()
    img.members.insert(0, M("notes.json", b"{" + b" " * 5000 + b"}"))
    fails(img.tar(), "exceeds the limit of 4000 bytes", "'notes.json'", max_metadata_bytes=4000)
    assert check(img.tar(), max_metadata_bytes=64 << 10).config_digest == img.digest


def test_non_json_small_files_do_not_use_the_metadata_budget() -> None:
    img = legacy_image()
    img.members.insert(0, M("notes.txt", b"x" * 50_000))
    assert check(img.tar(), max_metadata_bytes=8 << 10).config_digest == img.digest


# ----------------------------------------------------------------------- ValidatingReader


def test_validating_reader_passes_bytes_through() -> None:
    data = oci_image().tar()
    progress: list[int] = []
    reader = ValidatingReader(
        io.BytesIO(data), len(data), chunk_size=1000, on_progress=progress.append
    )
    out = bytearray()
    while reader.tell() < len(data):
        out += reader.read(4096)
    assert bytes(out) == data
    assert reader.read(10) == b""
    assert reader.info is not None and reader.info.total_bytes == len(data)
    assert progress[-1] == len(data)


def test_validating_reader_read_all() -> None:
    data = legacy_image().tar()
    reader = ValidatingReader(io.BytesIO(data + b"extra"), len(data))
    assert reader.read() == data
    assert reader.info is not None and reader.info.config_digest == legacy_image().digest


def test_validating_reader_truncated_source() -> None:
    data = legacy_image().tar()
    reader = ValidatingReader(io.BytesIO(data[:-3000]), len(data))
    expected = rf"upload truncated: got {len(data) - 3000} of {len(data)} bytes"
    with pytest.raises(ImageArchiveError, match=expected):
        while reader.read(1 << 16):
            pass


def test_validating_reader_fails_before_handing_on_the_last_bytes() -> None:
    data = legacy_image().without("manifest.json").tar()
    reader = ValidatingReader(io.BytesIO(data), len(data))
    handed = 0
    with pytest.raises(ImageArchiveError, match="manifest.json"):
        while True:
            piece = reader.read(1024)
            if not piece:
                break
            handed += len(piece)
    assert handed < len(data)
    assert reader.info is None


def test_validating_reader_thin_archive() -> None:
    img = legacy_image([LAYER_A])
    data = img.without(img.layer_paths[0]).tar()
    reader = ValidatingReader(io.BytesIO(data), len(data), present_diff_ids=img.diff_ids)
    assert reader.read() == data
    assert reader.info is not None and reader.info.missing_layers == img.diff_ids
