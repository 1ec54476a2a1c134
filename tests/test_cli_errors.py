"""Bad input gets a one-line error and a non-zero exit, never a traceback."""

import socket
import subprocess
from pathlib import Path

import pytest
from dcfscli import run_dcfs as dcfs

from dcfs import rpc


def assert_clean_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_help_explains_every_command() -> None:
    for command in ["up", "metadata", "cachenode", "mount", "status", "refresh", "bench"]:
        result = dcfs(command, "--help")
        assert result.returncode == 0
        assert "usage: dcfs " + command in result.stdout
        assert "default" in result.stdout or command == "status"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://host/x",
        "file://relative",
        "file:///no/such/dir",
        "s3://",
        "s3://A_bad_bucket",
        "nonsense",
    ],
)
def test_bad_bucket_url(url: str, tmp_path: Path) -> None:
    result = dcfs(
        "metadata",
        "--bucket",
        url,
        "--db",
        str(tmp_path / "db"),
        "--listen",
        f"127.0.0.1:{rpc.free_port()}",
    )
    assert_clean_error(result, "error")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_bad_size_and_address_flags(tmp_path: Path) -> None:
    assert_clean_error(
        dcfs("cachenode", "--metadata", "127.0.0.1:1", "--memory", "12XB"), "not a size"
    )
    assert_clean_error(dcfs("cachenode", "--metadata", "nohostport"), "HOST:PORT")
    assert_clean_error(dcfs("up", str(tmp_path), "--nodes", "-1"), "--nodes")
    for ratio, message in [("1", "below 1"), ("-5%", "at least 0"), ("lots", "not a fraction")]:
        result = dcfs("mount", "127.0.0.1:1", str(tmp_path), f"--free-space-ratio={ratio}")
        assert_clean_error(result, message)


def test_bad_bench_flags(tmp_path: Path) -> None:
    assert_clean_error(dcfs("bench", str(tmp_path / "none")), "not a directory")
    assert_clean_error(dcfs("bench", str(tmp_path), "--baseline", "/no/dir"), "--baseline")
    assert_clean_error(dcfs("bench", str(tmp_path), "--client-stats", "/no/file"), "stats.json")
    assert_clean_error(dcfs("bench", str(tmp_path), "--metadata", "nohostport"), "HOST:PORT")
    assert_clean_error(dcfs("bench", str(tmp_path), "--metadata", "127.0.0.1:1"), "unreachable")
    assert_clean_error(dcfs("bench", str(tmp_path), "--engine", "dd"), "invalid choice")
    assert_clean_error(dcfs("bench", str(tmp_path), "--empty-caches"), "--client-stats")
    assert_clean_error(dcfs("bench", str(tmp_path), "--size", "1MiB"), "at least 16")
    assert_clean_error(dcfs("bench", str(tmp_path)), "no files to read")
    assert_clean_error(dcfs("bench", str(tmp_path), "--json", "/no/dir/r.json"), "--json")
    assert_clean_error(dcfs("bench", str(tmp_path), "--json", str(tmp_path)), "--json")
    assert_clean_error(dcfs("up", str(tmp_path), "--bench", "--json", "/no/dir/r.json"), "--json")


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = dcfs(
            "metadata",
            "--bucket",
            f"file://{tmp_path}",
            "--db",
            str(tmp_path / "db"),
            "--listen",
            f"127.0.0.1:{port}",
        )
    assert_clean_error(result, "cannot listen on", str(port))


def test_unreachable_metadata_service(tmp_path: Path) -> None:
    port = rpc.free_port()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    assert_clean_error(
        dcfs(
            "mount",
            f"127.0.0.1:{port}",
            str(mnt),
            "--foreground",
            "--cache-dir",
            str(tmp_path / "c"),
        ),
        "unreachable",
    )
    assert_clean_error(
        dcfs(
            "cachenode",
            "--metadata",
            f"127.0.0.1:{port}",
            "--cache-dir",
            str(tmp_path / "n"),
            "--listen",
            f"127.0.0.1:{rpc.free_port()}",
        ),
        "unreachable",
    )
    assert_clean_error(dcfs("status", f"127.0.0.1:{port}"), "unreachable")


def test_bad_refresh_and_consistency_arguments() -> None:
    assert_clean_error(dcfs("refresh", f"127.0.0.1:{rpc.free_port()}", "a/b"), "UNAVAILABLE")
    assert_clean_error(
        dcfs("metadata", "--bucket", "file:///", "--refresh-interval", "-1"), "0 or more"
    )
    assert_clean_error(dcfs("mount", "127.0.0.1:1", "/", "--consistency", "always"), "choose from")


def test_missing_mount_point(tmp_path: Path) -> None:
    result = dcfs("mount", "127.0.0.1:1", str(tmp_path / "nope"))
    assert_clean_error(result, "does not exist")
    result = dcfs("up", str(tmp_path / "nope"))
    assert_clean_error(result, "does not exist")
