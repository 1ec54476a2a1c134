"""The bench report: a table on stdout and, on request, JSON."""

import json
from dataclasses import asdict
from pathlib import Path

from dcfs.bench.jobs import JobResult


def header(with_baseline: bool) -> str:
    line = f"{'job':<22} {'engine':<6} {'MiB/s':>8} {'IOPS':>8} {'p50 ms':>7} {'p99 ms':>7}"
    if with_baseline:
        line += f" {'base MiB/s':>10} {'ratio':>6}"
    return line + "  tier hit ratios"


def row(result: JobResult, base: JobResult | None, with_baseline: bool) -> str:
    line = (
        f"{result.name:<22} {result.engine:<6} {result.mib_s:>8.1f} {result.iops:>8.0f} "
        f"{result.p50_ms:>7.2f} {result.p99_ms:>7.2f}"
    )
    if with_baseline:
        if base is not None and base.mib_s > 0:
            line += f" {base.mib_s:>10.1f} {result.mib_s / base.mib_s:>5.2f}x"
        else:
            line += f" {'-':>10} {'-':>6}"
    tiers = ", ".join(f"{name} {ratio:.0%}" for name, ratio in sorted(result.tiers.items()))
    return line + ("  " + tiers if tiers else "")


def _as_dict(result: JobResult) -> dict[str, object]:
    return {**asdict(result), "mib_s": result.mib_s, "iops": result.iops}


def write_json(results: list[tuple[JobResult, JobResult | None]], path: Path) -> None:
    jobs = []
    for result, base in results:
        entry = _as_dict(result)
        if base is not None:
            entry["baseline"] = _as_dict(base)
            entry["ratio"] = result.mib_s / base.mib_s if base.mib_s else None
        jobs.append(entry)
    path.write_text(json.dumps({"jobs": jobs}, indent=2) + "\n")
