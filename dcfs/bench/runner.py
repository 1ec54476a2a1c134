"""Runs the job list over a mount (and a baseline directory) and reports."""

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from dcfs.bench import fio, pyreader
from dcfs.bench.data import RootedData, drop_page_cache, find_data, read_through
from dcfs.bench.jobs import STANDARD_JOBS, JobResult, JobSpec
from dcfs.bench.tiers import StatsSource, hit_ratios
from dcfs.errors import ConfigError, DcfsError

log = logging.getLogger("dcfs.bench")


@dataclass(frozen=True)
class BenchOptions:
    engine: str = "auto"  # "auto", "fio" or "python"
    size_cap: int = 1024 * 1024 * 1024
    jobs: tuple[JobSpec, ...] = STANDARD_JOBS


def _engine(spec: JobSpec, requested: str) -> str:
    if spec.kind == "small":
        return "python"  # fio has no open-read-close-per-file job
    if requested == "fio" and not fio.available():
        raise ConfigError("--engine fio: fio is not installed (apt-get install fio)")
    if requested == "auto":
        return "fio" if fio.available() else "python"
    return requested


def _prepare(spec: JobSpec, data: RootedData) -> None:
    """Put the page cache in the state the job's phase names."""
    files = [data.large] if spec.kind in ("seq", "rand") else data.small
    if spec.phase in ("cold", "warm"):
        # Cold on the mount: nothing of it was read yet. Cold on a baseline
        # directory: its pages may be cached (it can even be the bucket the
        # mount just read), so drop them.
        drop_page_cache(files)
    elif spec.phase == "re-read":
        read_through(files)


@contextlib.contextmanager
def _failing_reads_named(spec: JobSpec, data: RootedData) -> Iterator[None]:
    """A read that fails (EIO or ESTALE from a mount, say) ends the run with
    the job's name, the file and the error, not a traceback."""
    try:
        yield
    except OSError as exc:
        where = exc.filename or (data.large if spec.kind != "small" else "a small file")
        raise DcfsError(f"{spec.name}: reading {where}: {exc.strerror or exc}") from None


def _run_job(spec: JobSpec, data: RootedData, engine: str) -> JobResult:
    if spec.kind == "small":
        return pyreader.small_files(spec, data.small)
    if engine == "fio":
        return fio.run(spec, data.large, data.large_size)
    if spec.kind == "seq":
        return pyreader.sequential(spec, data.large, data.large_size)
    return pyreader.random_reads(spec, data.large, data.large_size)


def run_jobs(
    root: Path,
    options: BenchOptions,
    *,
    baseline: Path | None = None,
    stats: StatsSource | None = None,
    empty_caches: Callable[[], None] | None = None,
    progress: Callable[[JobResult, JobResult | None], None] = lambda r, b: None,
) -> list[tuple[JobResult, JobResult | None]]:
    """Each job on ``root``, then on ``baseline`` (same relative paths), in
    the same run so the ratio compares like with like; ``empty_caches`` runs
    before the first cold job on ``root``, so the run sees what a fresh
    cluster would."""
    dataset = find_data(root, options.size_cap)
    mounted = dataset.at(root)
    based = dataset.at(baseline) if baseline is not None else None
    if based is not None:
        missing = [p for p in [based.large, *based.small] if not p.is_file()]
        if missing:
            raise ConfigError(f"--baseline lacks {missing[0]} (it must hold the same files)")
    results = []
    for spec in options.jobs:
        if spec.kind == "small" and not dataset.small:
            continue
        engine = _engine(spec, options.engine)
        if spec.phase == "cold" and empty_caches is not None:
            empty_caches()  # once: the cold jobs read different files
            empty_caches = None
        with _failing_reads_named(spec, mounted):
            _prepare(spec, mounted)
            before = stats() if stats else {}
            result = _run_job(spec, mounted, engine)
        if stats:
            result.tiers = hit_ratios(before, stats())
        base = None
        if based is not None:
            with _failing_reads_named(spec, based):
                _prepare(spec, based)
                base = _run_job(spec, based, engine)
        progress(result, base)
        results.append((result, base))
    return results
