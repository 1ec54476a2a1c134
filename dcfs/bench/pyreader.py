"""The built-in engine: the jobs' reads done with os.preadv (O_DIRECT into
page-aligned buffers where the job asks for it), timed per operation."""

import mmap
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dcfs.bench.jobs import JobResult, JobSpec


class _Recorder:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.latencies: list[float] = []
        self.bytes = 0

    def add(self, latencies: list[float], nbytes: int) -> None:
        with self._lock:
            self.latencies.extend(latencies)
            self.bytes += nbytes

    def result(self, spec: JobSpec, seconds: float) -> JobResult:
        lat = sorted(self.latencies)

        def pct(q: float) -> float:
            return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else 0.0

        return JobResult(spec.name, "python", self.bytes, len(lat), seconds, pct(0.5), pct(0.99))


def _open(path: Path, direct: bool) -> int:
    return os.open(path, os.O_RDONLY | (os.O_DIRECT if direct else 0))


def _read_slice(
    path: Path, start: int, length: int, spec: JobSpec, deadline: float, rec: _Recorder
) -> None:
    buf = mmap.mmap(-1, spec.block_size)  # page-aligned, as O_DIRECT needs
    latencies: list[float] = []
    total = 0
    fd = _open(path, spec.direct)
    until = time.perf_counter() + spec.min_s  # go over the slice again until then
    try:
        offset, end = start, start + length
        while time.perf_counter() < deadline:
            if offset >= end:
                if time.perf_counter() >= until:
                    break
                offset = start
            started = time.perf_counter()
            n = os.preadv(fd, [buf], offset)
            latencies.append(time.perf_counter() - started)
            if n <= 0:
                break
            total += n
            offset += n
    finally:
        os.close(fd)
        buf.close()
    rec.add(latencies, total)


def sequential(spec: JobSpec, path: Path, size: int) -> JobResult:
    """``spec.jobs`` threads read disjoint slices of ``size`` bytes, as fio's
    ``offset_increment`` does."""
    rec = _Recorder()
    deadline = time.perf_counter() + spec.max_s
    slice_size = spec.slice_size(size)
    started = time.perf_counter()
    with ThreadPoolExecutor(spec.jobs, thread_name_prefix="bench-reader") as pool:
        readers = [
            pool.submit(_read_slice, path, i * slice_size, slice_size, spec, deadline, rec)
            for i in range(spec.jobs)
        ]
        for reader in readers:
            reader.result()  # a reader's OSError is the job's
    return rec.result(spec, time.perf_counter() - started)


def random_reads(spec: JobSpec, path: Path, size: int, seed: int = 7) -> JobResult:
    rng = random.Random(seed)
    rec = _Recorder()
    buf = mmap.mmap(-1, spec.block_size)
    latencies: list[float] = []
    total = 0
    slots = max(1, size // spec.block_size)
    started = time.perf_counter()
    deadline = started + spec.max_s
    fd = _open(path, spec.direct)
    try:
        for _ in range(spec.ios):
            offset = rng.randrange(slots) * spec.block_size
            t0 = time.perf_counter()
            total += os.preadv(fd, [buf], offset)
            latencies.append(time.perf_counter() - t0)
            if t0 > deadline:
                break
    finally:
        os.close(fd)
        buf.close()
    rec.add(latencies, total)
    return rec.result(spec, time.perf_counter() - started)


def small_files(spec: JobSpec, paths: list[Path]) -> JobResult:
    """Open, read to EOF, close, one file after another — as a training data
    loader does. An operation is a file."""
    rec = _Recorder()
    latencies: list[float] = []
    total = 0
    started = time.perf_counter()
    deadline = started + spec.max_s
    for path in paths:
        t0 = time.perf_counter()
        with path.open("rb", buffering=0) as f:
            while chunk := f.read(1024 * 1024):
                total += len(chunk)
        latencies.append(time.perf_counter() - t0)
        if t0 > deadline:
            break
    rec.add(latencies, total)
    return rec.result(spec, time.perf_counter() - started)
