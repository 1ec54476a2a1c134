"""The commands as a user runs them: ``dcfs up`` (with its teardown),
``dcfs mount`` in the background, ``dcfs status`` and ``dcfs bench``."""

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from clusters import members, mounted, node_stats, running_cluster, wait_until
from dcfscli import run_dcfs

from dcfs.launcher import unmount
from dcfs.sample import SampleSpec, make_sample


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid``, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_up_serves_the_sample_and_sigterm_leaves_nothing_behind(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    state = tmp_path / "state"
    log = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dcfs",
            "up",
            str(mnt),
            "--nodes",
            "2",
            "--sample-size",
            "6MiB",
            "--state-dir",
            str(state),
        ],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    children: set[int] = set()
    try:
        assert wait_until(lambda: os.path.ismount(mnt) or up.poll() is not None, 90)
        assert os.path.ismount(mnt), (tmp_path / "up.log").read_text()
        model = mnt / "models" / "llm-7b" / "model-00001-of-00002.safetensors"
        source = state / "sample" / "models" / "llm-7b" / model.name
        assert (
            hashlib.sha256(model.read_bytes()).digest()
            == hashlib.sha256(source.read_bytes()).digest()
        )
        assert len(list((mnt / "datasets" / "train").rglob("*.bin"))) == SampleSpec().small_files
        children = _descendants(up.pid)
        assert len(children) == 4  # metadata, two cache nodes, the mount
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=60) == 0
        assert not os.path.ismount(mnt)
        assert not [pid for pid in children if _alive(pid)]
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        unmount(mnt)
        log.close()


@pytest.mark.parametrize(("engine", "pretouch"), [("python", True), ("fio", False)])
def test_up_bench_reports_every_job(tmp_path: Path, engine: str, pretouch: bool) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dcfs",
            "up",
            str(mnt),
            "--nodes",
            "1",
            "--sample-size",
            "20MiB",
            "--bench",
            "--engine",
            engine,
            "--json",
            str(tmp_path / "report.json"),
            *([] if pretouch else ["--no-pretouch"]),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    unmount(mnt)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "seq-1m cold" in result.stdout
    jobs = json.loads((tmp_path / "report.json").read_text())["jobs"]
    assert {j["name"] for j in jobs} >= {
        "seq-1m cold",
        "seq-1m x4 warm",
        "rand-4k warm",
        "rand-128k warm",
        "small-files cold",
        "small-files warm",
        "seq-1m re-read",
    }
    assert all(j["mib_s"] > 0 and j["ops"] > 0 for j in jobs)
    # The sample is a file:// bucket: its directory is the baseline, job by job.
    assert all(j["baseline"]["mib_s"] > 0 and j["ratio"] > 0 for j in jobs)
    assert {j["engine"] for j in jobs} == ({"python"} if engine == "python" else {"fio", "python"})
    # The children log to up's stderr: the node and the mount pre-touch, or neither.
    assert result.stderr.count("pre-touched") == (2 if pretouch else 0)
    assert not os.path.ismount(mnt)


@pytest.mark.parametrize("engine", ["python", "fio"])
def test_bench_on_a_mount_with_baseline_and_tier_ratios(tmp_path: Path, engine: str) -> None:
    """``dcfs bench`` by itself, as a user runs it on a mount of theirs."""
    bucket = make_sample(
        tmp_path / "bucket",
        SampleSpec(large_files=1, large_size=20 << 20, small_files=30, small_size=128 << 10),
    )
    report = tmp_path / "report.json"
    with (
        running_cluster(tmp_path / "state", f"file://{bucket}", nodes=1) as cluster,
        mounted(cluster, tmp_path / "mnt") as mnt,
    ):
        result = run_dcfs(
            "bench",
            str(mnt),
            "--baseline",
            str(bucket),
            "--metadata",
            cluster.metadata_address,
            "--client-stats",
            str(cluster.state_dir / "mount" / "stats.json"),
            "--engine",
            engine,
            "--json",
            str(report),
            timeout=300,
        )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"read test over {mnt} (baseline {bucket})" in result.stdout
    jobs = {j["name"]: j for j in json.loads(report.read_text())["jobs"]}
    assert set(jobs) >= {"seq-1m cold", "seq-1m warm", "rand-4k warm", "small-files warm"}
    assert all(
        j["mib_s"] > 0 and j["baseline"]["mib_s"] > 0 and j["ratio"] > 0 for j in jobs.values()
    )
    assert jobs["seq-1m warm"]["engine"] == engine
    # The first read of the file missed the node's tiers; the warm one hit the client's memory.
    assert "node memory" in jobs["seq-1m cold"]["tiers"]
    assert jobs["seq-1m warm"]["tiers"]["client memory"] > 0


def test_bench_empty_caches_makes_cold_jobs_read_the_bucket(tmp_path: Path) -> None:
    """On a cluster that holds every block already, ``--empty-caches`` drops
    the nodes' and the mount's tiers before the first job: the nodes fetch
    each block from the bucket again, and the bytes still match."""
    bucket = make_sample(
        tmp_path / "bucket",
        SampleSpec(large_files=1, large_size=20 << 20, small_files=10, small_size=128 << 10),
    )
    files = sorted(p for p in bucket.rglob("*") if p.is_file())
    stats_file = tmp_path / "state" / "mount" / "stats.json"
    with (
        running_cluster(tmp_path / "state", f"file://{bucket}", nodes=1) as cluster,
        mounted(cluster, tmp_path / "mnt") as mnt,
    ):
        for path in files:  # every block of the sample into the node and the mount
            assert (mnt / path.relative_to(bucket)).read_bytes() == path.read_bytes()
        (node,) = members(cluster)
        fetched_before = node_stats(node.address).bucket_fetches
        result = run_dcfs(
            "bench",
            str(mnt),
            "--empty-caches",
            "--metadata",
            cluster.metadata_address,
            "--client-stats",
            str(stats_file),
            "--engine",
            "python",
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert "caches emptied first" in result.stdout
        # 20 blocks of the large file and 10 small files (1 MiB blocks), again.
        assert node_stats(node.address).bucket_fetches - fetched_before >= 30
        assert json.loads(stats_file.read_text())["emptied"] == 1
        for path in files:  # what was fetched anew is the same bytes
            assert (mnt / path.relative_to(bucket)).read_bytes() == path.read_bytes()


def test_bench_names_the_job_a_failed_read_ended(tmp_path: Path) -> None:
    """An object that changes in the bucket under the mount fails its reads
    (ESTALE); ``dcfs bench`` reports it in one line, naming the job and file."""
    bucket = make_sample(
        tmp_path / "bucket",
        SampleSpec(large_files=1, large_size=20 << 20, small_files=0, small_size=0),
    )
    model = bucket / "models" / "llm-7b" / "model-00001-of-00001.safetensors"
    with (
        running_cluster(tmp_path / "state", f"file://{bucket}", nodes=1) as cluster,
        mounted(cluster, tmp_path / "mnt") as mnt,
    ):
        model.write_bytes(os.urandom(20 << 20))  # the namespace still has the old version
        result = run_dcfs("bench", str(mnt), "--engine", "python", timeout=300)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"seq-1m cold: reading {mnt / model.relative_to(bucket)}: " in result.stderr
    assert "Stale file handle" in result.stderr or "Input/output error" in result.stderr


def test_background_mount_status_and_unmount(tmp_path: Path) -> None:
    bucket = make_sample(
        tmp_path / "bucket",
        SampleSpec(large_files=1, large_size=3 << 20, small_files=5, small_size=1000),
    )
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with running_cluster(tmp_path / "state", f"file://{bucket}", nodes=1) as cluster:
        try:
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "dcfs",
                    "mount",
                    cluster.metadata_address,
                    str(mnt),
                    "--cache-dir",
                    str(tmp_path / "client"),
                ],
                capture_output=True,
                text=True,
                timeout=60,
                stdin=subprocess.DEVNULL,
            )
            assert result.returncode == 0, result.stderr
            assert "mounted on" in result.stdout
            assert os.path.ismount(mnt)  # ready when the command returns
            assert (mnt / "README.txt").read_bytes() == (bucket / "README.txt").read_bytes()
            model = "models/llm-7b/model-00001-of-00001.safetensors"
            assert (mnt / model).read_bytes() == (bucket / model).read_bytes()

            status = subprocess.run(
                [sys.executable, "-m", "dcfs", "status", cluster.metadata_address],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert status.returncode == 0, status.stderr
            assert "cache nodes 1" in status.stdout
            assert (
                "memory" in status.stdout and "bucket  4 fetches" in status.stdout
            )  # 3 + 1 blocks

            subprocess.run(["fusermount3", "-u", str(mnt)], check=True)
            assert not os.path.ismount(mnt)
            log = tmp_path / "client" / "mount.log"
            # The daemon shut down cleanly (it logs its counts after the unmount).
            assert wait_until(lambda: "client fetches" in log.read_text(), 30)
        finally:
            unmount(mnt)
