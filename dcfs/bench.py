"""fio-style read tests over a directory (a dcfs mount, or a plain directory
as a baseline): sequential 1 MiB reads cold, warm and from the page cache,
random 4 KiB reads, and a many-small-files pass, with MiB/s, IOPS and
p50/p99 latency. Each job is bounded in count and time."""

import json
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

LARGE_FILE = 16 * 1024 * 1024
SMALL_FILE = 1024 * 1024


@dataclass
class JobResult:
    name: str
    bytes: int
    ops: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def mib_s(self) -> float:
        return self.bytes / (1024 * 1024) / self.seconds if self.seconds else 0.0

    @property
    def iops(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


class _Timer:
    def __init__(self, name: str) -> None:
        self.name = name
        self.latencies: list[float] = []
        self.bytes = 0
        self.start = time.perf_counter()

    def record(self, started: float, nbytes: int) -> None:
        self.latencies.append(time.perf_counter() - started)
        self.bytes += nbytes

    def result(self) -> JobResult:
        seconds = time.perf_counter() - self.start
        lat = sorted(self.latencies)
        return JobResult(
            self.name,
            self.bytes,
            len(lat),
            seconds,
            _percentile(lat, 0.5) * 1000,
            _percentile(lat, 0.99) * 1000,
        )


def _files(root: Path) -> Iterator[tuple[Path, int]]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            yield path, path.stat().st_size


def _drop_page_cache(paths: list[Path]) -> None:
    """Drop these files' pages from the kernel page cache (not the whole machine's)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def sequential(name: str, paths: list[Path], block: int = 1024 * 1024) -> JobResult:
    timer = _Timer(name)
    buf = bytearray(block)
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            while True:
                started = time.perf_counter()
                n = os.readv(fd, [buf])
                if n == 0:
                    break
                timer.record(started, n)
        finally:
            os.close(fd)
    return timer.result()


def random_reads(
    name: str, files: list[tuple[Path, int]], size: int, count: int, max_s: float, seed: int = 7
) -> JobResult:
    rng = random.Random(seed)
    fds = [(os.open(path, os.O_RDONLY), length) for path, length in files]
    timer = _Timer(name)
    deadline = time.perf_counter() + max_s
    try:
        for _ in range(count):
            fd, length = fds[rng.randrange(len(fds))]
            offset = rng.randrange(0, max(1, length - size)) // 4096 * 4096
            started = time.perf_counter()
            data = os.pread(fd, size, offset)
            timer.record(started, len(data))
            if started > deadline:
                break
    finally:
        for fd, _ in fds:
            os.close(fd)
    return timer.result()


def small_files(name: str, paths: list[Path]) -> JobResult:
    """Open, read to EOF, close — as a training data loader does; ops are files."""
    timer = _Timer(name)
    for path in paths:
        started = time.perf_counter()
        timer.record(started, len(path.read_bytes()))
    return timer.result()


def run_all(root: Path, progress: Callable[[str], None] = lambda _: None) -> list[JobResult]:
    """The standard job list over the files found under ``root``."""
    found = list(_files(root))
    large = [p for p, size in found if size >= LARGE_FILE]
    large_sized = [(p, size) for p, size in found if size >= LARGE_FILE]
    small = [p for p, size in found if 0 < size <= SMALL_FILE]
    results: list[JobResult] = []

    def job(fn: Callable[[], JobResult]) -> None:
        result = fn()
        progress(format_row(result))
        results.append(result)

    if large:
        job(lambda: sequential("seq-read-1m cold", large))
        _drop_page_cache(large)
        job(lambda: sequential("seq-read-1m warm", large))
        job(lambda: sequential("seq-read-1m page-cache", large))
        _drop_page_cache(large)
        job(lambda: random_reads("rand-read-4k warm", large_sized, 4096, 5000, 10.0))
        _drop_page_cache(large)
        job(lambda: random_reads("rand-read-128k warm", large_sized, 128 * 1024, 2000, 10.0))
    if small:
        job(lambda: small_files("small-files cold", small))
        job(lambda: small_files("small-files page-cache", small))
    return results


HEADER = f"{'job':<24} {'MiB/s':>9} {'IOPS':>9} {'p50 ms':>8} {'p99 ms':>8} {'ops':>7}"


def format_row(r: JobResult) -> str:
    return (
        f"{r.name:<24} {r.mib_s:>9.1f} {r.iops:>9.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.ops:>7}"
    )


def write_json(results: list[JobResult], path: Path) -> None:
    rows = [{**asdict(r), "mib_s": r.mib_s, "iops": r.iops} for r in results]
    path.write_text(json.dumps({"jobs": rows}, indent=2) + "\n")
