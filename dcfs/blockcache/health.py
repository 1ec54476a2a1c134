"""A disk's health: normal → degraded → off, with a retry after a back-off.

The disk is optional to correctness, so its faults never reach readers: the
tier asks :meth:`usable` before each operation and reports the outcome. Like
JuiceFS's normal → unstable → down disk states; logged once per episode, not
once per block.
"""

import logging
import threading
import time
from pathlib import Path

log = logging.getLogger("dcfs.disk")

NORMAL, DEGRADED, OFF = "normal", "degraded", "off"


class DiskHealth:
    def __init__(self, directory: Path, retry_after: float, max_failures: int) -> None:
        self._directory = directory
        self._retry_after = retry_after
        self._max_failures = max_failures
        self._lock = threading.Lock()
        self._state, self._failures, self._warned, self._retry_at = NORMAL, 0, False, 0.0

    @property
    def state(self) -> str:
        return self._state

    def usable(self) -> bool:
        """False while off; once per back-off period, let one call probe."""
        with self._lock:
            if self._state != OFF:
                return True
            now = time.monotonic()
            if now < self._retry_at:
                return False
            self._retry_at = now + self._retry_after
            return True

    def fault(self, exc: OSError) -> None:
        with self._lock:
            self._failures += 1
            first, self._warned = not self._warned, True
            turned_off = self._failures >= self._max_failures and self._state != OFF
            if self._failures >= self._max_failures:
                self._state = OFF
                self._retry_at = time.monotonic() + self._retry_after
            else:
                self._state = DEGRADED
        if first:
            log.warning("disk cache %s is failing, bypassing it: %s", self._directory, exc)
        if turned_off:
            log.info("disk cache %s off; retrying in %.0f s", self._directory, self._retry_after)

    def ok(self) -> None:
        if self._state == NORMAL:  # unlocked fast path; a stale read only delays recovery
            return
        with self._lock:
            recovered = self._state != NORMAL
            self._state, self._failures, self._warned = NORMAL, 0, False
        if recovered:
            log.info("disk cache %s works again", self._directory)
