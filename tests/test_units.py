"""Unit tests of the small shared pieces: sizes, blocks, wire checks,
addresses, singleflight, the placement ring and the prefetch window."""

import json
import os
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from dcfs import rpc, wire
from dcfs.bench import fio, pyreader
from dcfs.bench.jobs import JobSpec
from dcfs.bench.tiers import client_counters
from dcfs.blocks import BlockRef, ObjectVersion, block_count, blocks_for_range
from dcfs.checksum import crc32c
from dcfs.errors import ConfigError, CorruptBlock, InvalidRequest
from dcfs.ring import Node, Ring, assign, load_spread, moved_fraction
from dcfs.singleflight import SingleFlight
from dcfs.sizes import format_size, parse_size
from fsclient.prefetch import PrefetchWindow
from protos import dcfs_pb2

MiB = 1024 * 1024


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("512MiB", 512 * MiB),
        ("10GiB", 10 << 30),
        ("1G", 1 << 30),
        ("4096", 4096),
        ("1.5KiB", 1536),
        ("2MB", 2_000_000),
        ("0", 0),
    ],
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "MiB", "12XB", "-1G", "1 2"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="not a size"):
        parse_size(text)


def test_format_size() -> None:
    assert format_size(4 * MiB) == "4.0 MiB"
    assert format_size(12) == "12 B"


def test_blocks_for_range_clips_to_the_object() -> None:
    v = ObjectVersion("k", "e", 10 * MiB + 5)
    refs = blocks_for_range(v, 4 * MiB - 1, 2, 4 * MiB)
    assert [r.index for r in refs] == [0, 1]
    assert blocks_for_range(v, 10 * MiB + 5, 100, 4 * MiB) == []
    last = blocks_for_range(v, 9 * MiB, 100 * MiB, 4 * MiB)
    assert [r.index for r in last] == [2] and last[0].length == 2 * MiB + 5
    assert block_count(v.size, 4 * MiB) == 3


def test_block_id_depends_on_the_version() -> None:
    a = BlockRef(ObjectVersion("k", "e1", 100), 0, MiB)
    b = BlockRef(ObjectVersion("k", "e2", 100), 0, MiB)
    assert a.block_id != b.block_id
    assert a.block_id == BlockRef(ObjectVersion("k", "e1", 100), 0, MiB).block_id


def test_wire_rejects_malformed_block_refs() -> None:
    good = dcfs_pb2.BlockRef(key="k", etag="e", object_size=3 * MiB, index=2, block_size=MiB)
    assert wire.block_from_proto(good, MiB).length == MiB
    bad = [
        dcfs_pb2.BlockRef(key="", etag="e", object_size=10, index=0, block_size=MiB),
        dcfs_pb2.BlockRef(key="k", etag="", object_size=10, index=0, block_size=MiB),
        dcfs_pb2.BlockRef(key="k", etag="e", object_size=10, index=0, block_size=2 * MiB),
        dcfs_pb2.BlockRef(key="k", etag="e", object_size=10, index=1, block_size=MiB),
        dcfs_pb2.BlockRef(),
    ]
    for msg in bad:
        with pytest.raises(InvalidRequest):
            wire.block_from_proto(msg, MiB)


def test_verify_block_checks_length_and_checksum() -> None:
    ref = BlockRef(ObjectVersion("k", "e", 5), 0, MiB)
    assert wire.verify_block(ref, b"hello", crc32c(b"hello")) == b"hello"
    with pytest.raises(CorruptBlock):
        wire.verify_block(ref, b"hellO", crc32c(b"hello"))
    with pytest.raises(CorruptBlock):
        wire.verify_block(ref, b"hell", crc32c(b"hell"))


@pytest.mark.parametrize("text", ["localhost", "host:", ":80", "h:0", "h:70000", "h:x"])
def test_parse_address_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        rpc.parse_address(text)


def test_parse_address() -> None:
    assert rpc.parse_address("127.0.0.1:7070") == ("127.0.0.1", 7070)
    assert rpc.parse_address("[::1]:7070") == ("::1", 7070)


def test_bind_reports_a_port_in_use() -> None:
    port = rpc.free_port()
    first = rpc.make_server(1)
    rpc.bind(first, f"127.0.0.1:{port}")
    first.start()
    try:
        with pytest.raises(ConfigError, match="cannot listen"):
            rpc.bind(rpc.make_server(1), f"127.0.0.1:{port}")
    finally:
        first.stop(None)


def test_singleflight_runs_once_for_concurrent_callers() -> None:
    flight: SingleFlight[int] = SingleFlight()
    calls = Counter[str]()
    release = threading.Event()
    results: list[tuple[int, bool]] = []

    def slow() -> int:
        calls["n"] += 1
        release.wait(5)
        return 42

    threads = [
        threading.Thread(target=lambda: results.append(flight.do("k", slow))) for _ in range(8)
    ]
    for t in threads:
        t.start()
    time.sleep(0.2)
    release.set()
    for t in threads:
        t.join()
    assert calls["n"] == 1
    assert [r for r, _ in results] == [42] * 8
    assert sum(shared for _, shared in results) == 7


def test_singleflight_shares_errors_and_forgets_them() -> None:
    flight: SingleFlight[int] = SingleFlight()

    def boom() -> int:
        raise ValueError("x")

    with pytest.raises(ValueError):
        flight.do("k", boom)
    assert flight.do("k", lambda: 1) == (1, False)


def _nodes(n: int, capacity: int = 100) -> list[Node]:
    return [Node(f"node{i}", f"127.0.0.1:{7000 + i}", capacity) for i in range(n)]


def test_placement_of_100000_blocks_on_10_nodes() -> None:
    """The issue's numbers (printed by bench/placement.py): a join or a leave
    moves about 1/N of the blocks, only to or from that node, and every node
    owns close to its fair share."""
    blocks = [f"block{i}" for i in range(100_000)]
    nodes = _nodes(11)
    ten = Ring(nodes[:10])
    on_ten = assign(ten, blocks)
    on_eleven = assign(Ring(nodes), blocks)
    on_nine = assign(Ring(nodes[:9]), blocks)

    assert 0.08 < moved_fraction(on_ten, on_eleven) < 0.10  # 1/11 = 0.091
    assert {new for old, new in zip(on_ten, on_eleven, strict=True) if old != new} == {"node10"}
    assert 0.09 < moved_fraction(on_ten, on_nine) < 0.11  # node9's share, 1/10
    assert {old for old, new in zip(on_ten, on_nine, strict=True) if old != new} == {"node9"}

    low, high = load_spread(ten, on_ten)
    assert 0.95 < low <= 1 <= high < 1.05


def test_ring_spreads_load_by_capacity() -> None:
    nodes = [*_nodes(3), Node("big", "127.0.0.1:8000", 300)]
    ring = Ring(nodes)
    counts = Counter(ring.owner(f"b{i}").node_id for i in range(20_000))  # type: ignore[union-attr]
    assert 0.4 < counts["big"] / 20_000 < 0.6
    for i in range(3):
        assert 0.12 < counts[f"node{i}"] / 20_000 < 0.22


def test_ring_owners_are_a_failover_order() -> None:
    ring = Ring(_nodes(4))
    owners = ring.owners("some-block")
    assert len(owners) == 4 and len({n.node_id for n in owners}) == 4
    assert ring.owner("some-block") == owners[0]
    assert Ring([]).owner("x") is None


def test_prefetch_window_grows_on_sequential_reads_and_resets_on_jumps() -> None:
    w = PrefetchWindow(max_blocks=8, slack=0)
    sizes = [len(w.advise(i * MiB, MiB, MiB, 100)) for i in range(6)]
    assert sizes == [1, 2, 4, 8, 8, 8]
    assert len(w.advise(50 * MiB, MiB, MiB, 100)) == 0
    assert len(w.advise(51 * MiB, MiB, MiB, 100)) == 1
    assert list(w.advise(52 * MiB, MiB, MiB, 54)) == [53]  # clipped at the last block


@pytest.mark.parametrize("size", [0, 1, 127, 128, 300_000])
def test_block_reply_encoding_matches_protobuf(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    encoded = wire.encode_block_reply(data, "memory")
    parsed = dcfs_pb2.ReadBlockReply.FromString(encoded)
    assert (parsed.data, parsed.crc32c, parsed.source) == (data, crc32c(data), "memory")
    generated = dcfs_pb2.ReadBlockReply(data=data, crc32c=12345, source="disk").SerializeToString()
    got, crc, source = wire.decode_block_reply(generated)
    assert (bytes(got), crc, source) == (data, 12345, "disk")


@pytest.mark.parametrize("message", [b"\x0a\x05abc", b"\x0a", b"\x10\xff", b"\x0f"])
def test_malformed_block_replies_are_corrupt_blocks(message: bytes) -> None:
    with pytest.raises(CorruptBlock):
        wire.decode_block_reply(message)


def test_the_python_reader_repeats_a_pass_until_min_s(tmp_path: Path) -> None:
    """Warm and re-read jobs time at least ``min_s`` of reading; a cold job
    reads its slices exactly once (a second pass would no longer be cold)."""
    data = tmp_path / "f"
    data.write_bytes(b"x" * (4 * 1024 * 1024))
    once = pyreader.sequential(JobSpec("cold", "seq", "cold", direct=False), data, 4 << 20)
    assert once.bytes == 4 << 20 and once.ops == 4
    timed = JobSpec("warm", "seq", "warm", direct=False, jobs=2, min_s=0.2)
    repeated = pyreader.sequential(timed, data, 4 << 20)
    assert repeated.seconds >= 0.2 and repeated.bytes % (2 << 20) == 0
    assert repeated.bytes > 4 << 20


def test_client_counters_signal_only_a_dcfs_mount(tmp_path: Path) -> None:
    """A stats file whose PID now belongs to another process (its mount is
    gone) must not make ``dcfs bench`` send that process SIGUSR1, which would
    end it."""
    other = subprocess.Popen(["sleep", "60"])
    try:
        stats = tmp_path / "stats.json"
        stats.write_text(json.dumps({"updated": 1.0, "pid": other.pid, "tiers": []}))
        assert client_counters(stats)() == {}
        assert other.poll() is None  # still running: never signalled
    finally:
        other.kill()
        other.wait()


def test_fio_reads_a_path_with_a_colon(tmp_path: Path) -> None:
    """fio's ``filename=`` splits at a bare ':' (a list of files)."""
    data = tmp_path / "host:port" / "big"
    data.parent.mkdir()
    data.write_bytes(os.urandom(4 << 20))
    result = fio.run(JobSpec("seq-1m cold", "seq", "cold", direct=False), data, 4 << 20)
    assert (result.engine, result.bytes, result.ops) == ("fio", 4 << 20, 4)
