"""The fio engine: runs the job files in bench/fio with the job's parameters
in the environment, and reads fio's JSON report."""

import json
import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from dcfs.bench.jobs import JobResult, JobSpec
from dcfs.errors import DcfsError


def available() -> bool:
    return shutil.which("fio") is not None


def _job_file(name: str) -> Path:
    return Path(str(resources.files("dcfs.bench").joinpath("fio", name)))


def run(spec: JobSpec, path: Path, size: int) -> JobResult:
    env = {
        **os.environ,
        "DCFS_FILE": str(path).replace(":", "\\:"),  # fio splits filename= at a bare ':'
        "DCFS_DIRECT": "1" if spec.direct else "0",
        "DCFS_RUNTIME": f"{spec.min_s or spec.max_s:g}s",
        "DCFS_TIME_BASED": "1" if spec.min_s else "0",
        "DCFS_BS": str(spec.block_size),
    }
    if spec.kind == "seq":
        env |= {"DCFS_SIZE": str(spec.slice_size(size)), "DCFS_JOBS": str(spec.jobs)}
        job_file = _job_file("seq-1m.fio")
    else:
        env |= {"DCFS_IOS": str(spec.ios)}
        job_file = _job_file("rand.fio")
    proc = subprocess.run(
        ["fio", "--output-format=json", str(job_file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=max(spec.max_s, spec.min_s) + 60,
        check=False,
    )
    if proc.returncode != 0:
        message = (proc.stderr or proc.stdout).strip().splitlines()
        raise DcfsError(f"fio failed on {path}: {message[-1] if message else proc.returncode}")
    read = json.loads(proc.stdout)["jobs"][0]["read"]
    percentiles = read["clat_ns"].get("percentile", {})
    seconds = read["runtime"] / 1000
    return JobResult(
        spec.name,
        "fio",
        int(read["io_bytes"]),
        int(read["total_ios"]),
        seconds,
        percentiles.get("50.000000", 0) / 1e6,
        percentiles.get("99.000000", 0) / 1e6,
    )
