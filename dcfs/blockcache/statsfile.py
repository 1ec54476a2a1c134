"""A JSON file of counters, rewritten every few seconds and at close: how a
process without a stats RPC (the FUSE client) shows its tiers.

Written to a temporary file and renamed, so a reader never sees half of it.
"""

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from dcfs.blockcache.blockfile import remove_leftovers

log = logging.getLogger("dcfs.stats")

Snapshot = Callable[[], dict[str, object]]


class StatsFile:
    def __init__(self, path: Path, snapshot: Snapshot, interval_s: float = 2.0) -> None:
        self.path = path
        self._snapshot = snapshot
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stats-file", daemon=True)
        self._warned = False

    def start(self) -> None:
        remove_leftovers(self.path)
        self.write()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.write()

    def write(self) -> None:
        """Write the counters now; a failure is logged once, never raised."""
        report = {"updated": time.time(), "pid": os.getpid(), **self._snapshot()}
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp.write_text(json.dumps(report, indent=1) + "\n")
            os.replace(tmp, self.path)
        except OSError as exc:
            with suppress(OSError):
                tmp.unlink()
            if not self._warned:
                log.warning("cannot write %s: %s", self.path, exc)
                self._warned = True

    def close(self) -> None:
        """Stop the periodic writes and write the final counters."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.write()
