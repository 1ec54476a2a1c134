"""A shared-memory slot for block replies between processes on one machine.

Over loopback TCP a 4 MiB block costs its sender about 0.3 CPU-seconds per
GiB and its receiver 0.15: the kernel copies it into socket buffers and out
again, through the TCP stack. A copy into memory both processes map, and one
out of it, cost 0.06 and 0.09, and one stream moves 7-8 GB/s instead of 3-3.5
(``bench/slot_transfer.py``). A cache node on the mount's machine (``dcfs
up``, or a node beside every mount) is common, so a block stream connection
offers the node such a slot:

- the client makes an anonymous memory file (``memfd``) named
  :data:`NAME`, of ``size`` bytes for data and a random :data:`TOKEN_SIZE`-byte
  token after them, faults its pages in once, and names it by its ``/proc``
  path;
- a node on the same machine that may open it (same user, or root) maps it,
  checks that it is such a memory file and that the token matches, and from
  then on copies its replies into the data part. Any other node cannot open
  the path, or finds something else there, and declines: the connection then
  carries the bytes as before.

The node writes only the data part and never trusts the path beyond it: a
path that is not a ``/proc/PID/fd/N`` link to a memory file of that name, of
the announced size, holding the token, is refused, so an offer cannot make
a node write into any other file. The token stays secret because the node
never writes over it.
"""

import logging
import mmap
import os
import re
import secrets
from typing import Final

from dcfs import buffers

log = logging.getLogger("dcfs.blockstream")

NAME: Final = "dcfs-block-slot"
TOKEN_SIZE: Final = 16
_PROC_FD = re.compile(r"/proc/[0-9]+/fd/[0-9]+")


class Slot:
    """The client's side: the memory file, mapped, with its token."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._token = secrets.token_bytes(TOKEN_SIZE)
        self._fd = os.memfd_create(NAME, os.MFD_CLOEXEC)
        try:
            os.fchmod(self._fd, 0o600)
            os.ftruncate(self._fd, size + TOKEN_SIZE)
            # Every page faulted in now (MAP_POPULATE): the first write to a
            # fresh page costs far more than a copy into it (see dcfs.heap).
            flags = mmap.MAP_SHARED | mmap.MAP_POPULATE
            self._map = mmap.mmap(self._fd, size + TOKEN_SIZE, flags=flags)
        except BaseException:
            os.close(self._fd)
            raise
        self._map[size:] = self._token

    def offer(self) -> bytes:
        """What the node needs to map the slot: the token, then the path."""
        return self._token + f"/proc/{os.getpid()}/fd/{self._fd}".encode()

    def take(self, length: int) -> bytearray:
        """A copy of the first ``length`` bytes the node put in the slot."""
        if not 0 <= length <= self.size:
            raise ValueError(f"{length} bytes do not fit a {self.size}-byte slot")
        data = buffers.unfilled(length)
        with memoryview(self._map) as view:
            data[:] = view[:length]
        return data

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)


class MappedSlot:
    """The node's side of a slot it accepted."""

    def __init__(self, area: mmap.mmap, size: int) -> None:
        self._map = area
        self.size = size

    def put(self, data: bytes | bytearray | memoryview) -> bool:
        """Copy ``data`` into the slot; False if it does not fit."""
        if len(data) > self.size:
            return False
        with memoryview(self._map) as view:
            view[: len(data)] = data
        return True

    def close(self) -> None:
        self._map.close()


def accept(offer: bytes, max_size: int) -> MappedSlot | None:
    """Map the slot an offer names, or None (with the reason logged at
    debug level) if it is not a slot of a client on this machine."""
    token, path = offer[:TOKEN_SIZE], offer[TOKEN_SIZE:].decode(errors="replace")
    if len(token) != TOKEN_SIZE or not _PROC_FD.fullmatch(path):
        log.debug("block slot offer declined: malformed")
        return None
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        log.debug("block slot offer declined: %s", exc)
        return None
    try:
        # What we opened, not what the path named a moment before.
        if not os.readlink(f"/proc/self/fd/{fd}").startswith(f"/memfd:{NAME} "):
            log.debug("block slot offer declined: %s is not a block slot", path)
            return None
        total = os.fstat(fd).st_size
        if not TOKEN_SIZE < total <= max_size + TOKEN_SIZE:
            log.debug("block slot offer declined: a %d-byte slot", total)
            return None
        area = mmap.mmap(fd, total)
    except OSError as exc:
        log.debug("block slot offer declined: %s", exc)
        return None
    finally:
        os.close(fd)
    size = total - TOKEN_SIZE
    if not secrets.compare_digest(area[size:], token):
        area.close()
        log.debug("block slot offer declined: wrong token")
        return None
    return MappedSlot(area, size)
