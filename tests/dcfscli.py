"""The ``dcfs`` command as a user runs it, in a subprocess of this Python."""

import subprocess
import sys


def run_dcfs(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dcfs", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
