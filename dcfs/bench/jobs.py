"""The standard job list and its results.

Phases: *cold* is the first read of the data in this run; *warm* drops the
kernel's page cache for the files first (``posix_fadvise`` DONTNEED on just
those files), so reads reach the filesystem's own caches; *re-read* is a
buffered read of data already in the page cache.
"""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class JobSpec:
    name: str
    kind: str  # "seq", "rand" or "small"
    phase: str  # "cold", "warm" or "re-read"
    block_size: int = 1024 * 1024
    jobs: int = 1
    direct: bool = True
    ios: int = 0  # random reads: how many (bounded by max_s as well)
    max_s: float = 20.0
    # Sequential reads of data that stays where it is (warm, re-read) go
    # over the file again until this long has passed: at memory speed one
    # pass of a 256 MiB file lasts 20-40 ms, too short to time.
    min_s: float = 0.0

    def slice_size(self, size: int) -> int:
        """Bytes each of ``jobs`` sequential readers takes of a ``size``-byte
        file: disjoint, block-aligned slices (fio's ``offset_increment``)."""
        return size // self.jobs // self.block_size * self.block_size or size


MiB = 1024 * 1024

STANDARD_JOBS: tuple[JobSpec, ...] = (
    JobSpec("seq-1m cold", "seq", "cold"),
    JobSpec("small-files cold", "small", "cold", direct=False),
    JobSpec("seq-1m warm", "seq", "warm", min_s=2.0),
    JobSpec("seq-1m x4 warm", "seq", "warm", jobs=4, min_s=2.0),
    JobSpec("rand-4k warm", "rand", "warm", block_size=4096, ios=5000, max_s=10),
    JobSpec("rand-128k warm", "rand", "warm", block_size=128 * 1024, ios=2000, max_s=10),
    JobSpec("small-files warm", "small", "warm", direct=False),
    JobSpec("seq-1m re-read", "seq", "re-read", direct=False, min_s=2.0),
    JobSpec("small-files re-read", "small", "re-read", direct=False),
)


@dataclass
class JobResult:
    name: str
    engine: str
    bytes: int
    ops: int
    seconds: float
    p50_ms: float
    p99_ms: float
    tiers: dict[str, float] = field(default_factory=dict)  # tier -> hit ratio in this job

    @property
    def mib_s(self) -> float:
        return self.bytes / MiB / self.seconds if self.seconds else 0.0

    @property
    def iops(self) -> float:
        """Operations per second; for small-file jobs an operation is a file."""
        return self.ops / self.seconds if self.seconds else 0.0
