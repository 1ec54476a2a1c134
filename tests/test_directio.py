"""Cache nodes write block files around the page cache (O_DIRECT): the
layout, the in-place and copied writes, and reading either layout back."""

import ctypes
import mmap
import os
from pathlib import Path

import pytest
from blockrefs import block_files, payload, ref

from dcfs import buffers
from dcfs.blockcache import DiskTier, directio
from dcfs.blockcache.blockfile import header_length
from dcfs.blocks import BlockRef, ObjectVersion

PAGE = buffers.PAGE


def resident_pages(path: Path) -> int:
    """Pages of ``path`` in the page cache (mincore(2) on a private mapping
    that is never written, so it shows the file's own pages)."""
    size = path.stat().st_size
    libc = ctypes.CDLL(None, use_errno=True)
    with path.open("rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY) as m:
        start = ctypes.c_char.from_buffer(m)
        vec = (ctypes.c_ubyte * -(-size // mmap.PAGESIZE))()
        rc = libc.mincore(ctypes.c_void_p(ctypes.addressof(start)), ctypes.c_size_t(size), vec)
        del start
        assert rc == 0, os.strerror(ctypes.get_errno())
        return sum(v & 1 for v in vec)


@pytest.mark.parametrize("mode", ["keep", "direct", "synced"])
def test_a_node_tier_leaves_no_pages_behind(
    tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache node's disk tier leaves no copy of its writes in the page
    cache (its memory tier has them), with O_DIRECT or, where the
    filesystem refuses it, by syncing and dropping; a client's keeps it."""
    if mode == "synced":
        monkeypatch.setattr(directio, "supported", lambda directory: False)
    disk = DiskTier(tmp_path / "c", 1 << 20, bypass_page_cache=mode != "keep")
    r = ref(0)
    disk.put(r, payload(r))
    [path] = block_files(tmp_path / "c")
    assert (resident_pages(path) == 0) is (mode != "keep")
    start = directio.data_offset(header_length(r)) if mode == "direct" else header_length(r)
    assert path.stat().st_size == start + r.length
    assert disk.get(r) == payload(r)
    disk.close()


def test_the_probe_says_no_rather_than_raise(tmp_path: Path) -> None:
    assert directio.supported(str(tmp_path))  # ext4 or tmpfs here
    assert not directio.supported(str(tmp_path / "missing"))
    assert list(tmp_path.iterdir()) == []  # the probe file had no name


def test_large_buffers_start_on_a_page() -> None:
    """So a node writes what it received with no copy."""
    assert all(buffers.page_aligned(buffers.unfilled(n)) for n in (64 * 1024, 100_003, 4 << 20))
    assert not buffers.page_aligned(b"x" * (1 << 20))  # bytes: copied, not written in place
    assert len(buffers.unfilled(100_003)) == 100_003


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("length", [0, 5, 3 * PAGE, 17 * PAGE + 5, (64 << 10) + 123])
@pytest.mark.parametrize("header_len", [100, PAGE + 7])
def test_direct_write_layout(tmp_path: Path, aligned: bool, length: int, header_len: int) -> None:
    """Header, zeros to the next page, then the data; the file ends where
    the data does, whatever its length and wherever its buffer lies."""
    data: bytes | bytearray = os.urandom(length)
    if aligned:
        data = buffers.unfilled(length)
        data[:] = os.urandom(length)
    header = os.urandom(header_len)
    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | directio.FLAGS, 0o600)
    try:
        directio.write(fd, header, data)
    finally:
        os.close(fd)
    start = directio.data_offset(header_len)
    raw = path.read_bytes()
    assert start % PAGE == 0
    assert raw == header + bytes(start - header_len) + data


@pytest.mark.parametrize("first, then", [(False, True), (True, False)])
def test_either_layout_reads_back_after_a_restart(tmp_path: Path, first: bool, then: bool) -> None:
    """A node's files read in a client's tier and the other way round: the
    file's size says where the data starts."""
    version = ObjectVersion("k/model.bin", "etag-1", (1 << 20) + 5)
    refs = [BlockRef(version, i, 256 << 10) for i in range(5)]
    blocks = {r.block_id: os.urandom(r.length) for r in refs}
    disk = DiskTier(tmp_path / "c", 8 << 20, bypass_page_cache=first)
    for r in refs:
        disk.put(r, blocks[r.block_id])
    disk.close()
    disk = DiskTier(tmp_path / "c", 8 << 20, bypass_page_cache=then)
    assert [disk.get(r) for r in refs] == [blocks[r.block_id] for r in refs]
    assert disk.stats().checksum_failures == 0
    disk.close()


def test_a_file_of_neither_layout_is_a_miss(tmp_path: Path) -> None:
    """One byte more than either layout: dropped as corrupt, never read."""
    disk = DiskTier(tmp_path / "c", 1 << 20, bypass_page_cache=True)
    r = ref(1)
    disk.put(r, payload(r))
    [path] = block_files(tmp_path / "c")
    with path.open("ab") as f:
        f.write(b"\0")
    assert disk.get(r) is None
    assert disk.stats().checksum_failures == 1
    assert not path.exists()
    disk.close()
