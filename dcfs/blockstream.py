"""The block stream: ReadBlock over a plain TCP connection beside gRPC.

grpcio's Python receive path costs about 1.2 CPU-seconds per GiB here, a
plain socket ``recv_into`` a preallocated buffer 0.2 (4 MiB replies on
loopback: 650-750 MiB/s against 2,800 MiB/s per stream). Cache nodes serve
both; clients use the stream when a node advertises one.

The request is the same ``ReadBlockRequest`` protobuf as the gRPC call. Frames:

    request:  b"DCB1" | u32 length | ReadBlockRequest
    reply:    u8 status (0 = OK, 255 = OK in the slot, else a grpc.StatusCode number)
              OK:    u32 crc32c | u8 length | source | u64 length | block bytes
              slot:  u32 crc32c | u8 length | source | u64 length
              error: u32 length | message (UTF-8)

    slot offer (a client's first frame, optional):
              b"DCS1" | u32 length | token and path (dcfs.blockslot)
    answer:   u8 1 (taken: replies that fit go into the slot) or 0 (declined)

A connection carries one request at a time and is reused; anything
malformed closes it.
"""

import logging
import queue
import socket
import socketserver
import struct
import threading
from collections.abc import Callable

from dcfs import blockslot, buffers, rpcerrors
from dcfs.errors import DcfsError, PeerError
from dcfs.rpc import parse_address
from protos import dcfs_pb2

log = logging.getLogger("dcfs.blockstream")

MAGIC = b"DCB1"
SLOT_MAGIC = b"DCS1"
IN_SLOT = 255  # the reply status of a block copied into the slot
MAX_REQUEST = 64 * 1024
MAX_BLOCK = 64 * 1024 * 1024
_HEAD = struct.Struct("<4sI")
_OK = struct.Struct("<BIB")
_LENGTH64 = struct.Struct("<Q")
_LENGTH32 = struct.Struct("<I")

# What a node does with a request: (block, crc32c, source), or a DcfsError.
Handler = Callable[[dcfs_pb2.ReadBlockRequest], tuple[bytes, int, str]]


def _recv_exact(sock: socket.socket, n: int) -> bytearray:
    return buffers.fill(sock.recv_into, n)


# ---- the node's side ---------------------------------------------------------


class _Connection(socketserver.BaseRequestHandler):
    server: "BlockStreamServer"

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self.server.idle_timeout_s)
        slot: blockslot.MappedSlot | None = None
        try:
            while True:
                head = sock.recv(_HEAD.size, socket.MSG_WAITALL)
                if not head:
                    return
                magic, length = _HEAD.unpack(head) if len(head) == _HEAD.size else (b"", 0)
                if length > MAX_REQUEST or magic not in (MAGIC, SLOT_MAGIC):
                    return  # not our protocol: drop the connection
                body = bytes(_recv_exact(sock, length))
                if magic == SLOT_MAGIC:
                    if slot is not None:
                        return  # one slot per connection
                    slot = blockslot.accept(body, MAX_BLOCK)
                    sock.sendall(b"\x01" if slot is not None else b"\x00")
                    continue
                self._answer(sock, dcfs_pb2.ReadBlockRequest.FromString(body), slot)
        except (OSError, ConnectionError, ValueError) as exc:
            log.debug("block stream connection ended: %s", exc)
        except Exception as exc:
            log.debug("malformed block stream request: %s", exc)
        finally:
            if slot is not None:
                slot.close()

    def _answer(
        self,
        sock: socket.socket,
        request: dcfs_pb2.ReadBlockRequest,
        slot: blockslot.MappedSlot | None,
    ) -> None:
        try:
            data, crc, source = self.server.handler(request)
        except DcfsError as exc:
            message = str(exc).encode()[:65536]
            code = rpcerrors.status_of(exc).value[0]
            sock.sendall(bytes([code]) + _LENGTH32.pack(len(message)) + message)
            return
        src = source.encode()[:255]
        in_slot = slot is not None and slot.put(data)
        head = _OK.pack(IN_SLOT if in_slot else 0, crc, len(src)) + src
        sock.sendall(head + _LENGTH64.pack(len(data)))
        if not in_slot:
            sock.sendall(data)


class BlockStreamServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, handler: Handler, idle_timeout_s: float = 300) -> None:
        """Listen on ``host:port`` (port 0: any free port, see :attr:`port`)."""
        self.handler = handler
        self.idle_timeout_s = idle_timeout_s
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            super().__init__((host, port), _Connection)
        except OSError as exc:
            raise DcfsError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        self._thread = threading.Thread(target=self.serve_forever, name="block-stream", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


# ---- the client's side -------------------------------------------------------


class _Link:
    """A connection to a node, and the slot the node took on it, if any."""

    def __init__(self, sock: socket.socket, slot: blockslot.Slot | None = None) -> None:
        self.sock = sock
        self.slot = slot

    def close(self) -> None:
        self.sock.close()
        if self.slot is not None:
            self.slot.close()


class BlockStreamClient:
    """Reads blocks from one node over a small pool of reused connections.

    Each new connection offers the node a slot of the block's size
    (:mod:`dcfs.blockslot`) until one is declined: a node on another machine
    or under another user cannot take it, and is not asked again.
    """

    def __init__(self, address: str, pool_size: int = 16, *, offer_slots: bool = True) -> None:
        self.address = address
        self._host, self._port = parse_address(address)
        self._idle: queue.LifoQueue[_Link] = queue.LifoQueue(pool_size)
        self._offer_slots = offer_slots
        self._count_lock = threading.Lock()
        self.slot_replies = 0  # blocks that came through a slot

    @property
    def offers_slots(self) -> bool:
        """Whether new connections still offer the node a slot."""
        return self._offer_slots

    def prepare(self, block_size: int, count: int, timeout_s: float) -> int:
        """Open up to ``count`` idle connections ahead of the reads, each
        with its slot, so that the slots' fresh memory is paid for now and
        not during a read; one connection only if the node declines slots.
        How many were opened."""
        opened = 0
        try:
            while opened < count and self._idle.qsize() < self._idle.maxsize:
                link = self._connect(block_size, timeout_s)
                self._release(link)
                opened += 1
                if link.slot is None:
                    break
        except (OSError, ConnectionError) as exc:
            log.debug("%s: no connection ahead of reads: %s", self.address, exc)
        return opened

    def read_block(
        self, request: dcfs_pb2.ReadBlockRequest, timeout_s: float
    ) -> tuple[bytearray, int, str]:
        """``(block, crc32c, source)``; ObjectChanged/ObjectNotFound for the
        object, PeerError for anything about the node or the connection."""
        try:
            pooled: _Link | None = self._idle.get_nowait()
        except queue.Empty:
            pooled = None
        if pooled is not None:
            try:
                return self._read_on(pooled, request, timeout_s)
            except PeerError:
                pass  # an idle connection the node closed (it restarted): once more, anew
        return self._read_on(None, request, timeout_s)

    def _read_on(
        self, link: _Link | None, request: dcfs_pb2.ReadBlockRequest, timeout_s: float
    ) -> tuple[bytearray, int, str]:
        try:
            if link is None:
                link = self._connect(request.block.block_size, timeout_s)
            link.sock.settimeout(timeout_s)
            answer = self._exchange(link, request)
        except (OSError, ConnectionError, PeerError) as exc:
            if link is not None:
                link.close()
            raise (
                exc if isinstance(exc, PeerError) else PeerError(f"{self.address}: {exc}")
            ) from None
        self._release(link)  # a clean answer, good or bad: the connection is reusable
        if isinstance(answer, DcfsError):
            raise answer
        return answer

    def _connect(self, block_size: int, timeout_s: float) -> _Link:
        link = _Link(self._open(timeout_s))
        if not (self._offer_slots and 0 < block_size <= MAX_BLOCK):
            return link
        try:
            link.slot = slot = blockslot.Slot(block_size)
        except OSError as exc:  # no memory file to be had: the bytes come over the socket
            log.debug("%s: no block slot: %s", self.address, exc)
            return link
        try:
            offer = slot.offer()
            link.sock.sendall(_HEAD.pack(SLOT_MAGIC, len(offer)) + offer)
            taken = _recv_exact(link.sock, 1) == b"\x01"
        except ConnectionError as exc:
            # A node from before slots drops the connection at the offer.
            log.debug("%s: no block slot (%s); connecting without", self.address, exc)
            link.close()
            return self._declined(_Link(self._open(timeout_s)))
        except BaseException:  # a timeout, say: the caller reports it
            link.close()
            raise
        return link if taken else self._declined(link)

    def _declined(self, link: _Link) -> _Link:
        """The node takes no slots: stop offering them; ``link`` without one."""
        self._offer_slots = False
        if link.slot is not None:
            link.slot.close()
            link.slot = None
        return link

    def _open(self, timeout_s: float) -> socket.socket:
        sock = socket.create_connection((self._host, self._port), timeout=timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _exchange(
        self, link: _Link, request: dcfs_pb2.ReadBlockRequest
    ) -> tuple[bytearray, int, str] | DcfsError:
        sock = link.sock
        body = request.SerializeToString()
        sock.sendall(_HEAD.pack(MAGIC, len(body)) + body)
        status = _recv_exact(sock, 1)[0]
        if status not in (0, IN_SLOT):
            length = _LENGTH32.unpack(_recv_exact(sock, 4))[0]
            if length > 65536:
                raise PeerError(f"{self.address}: malformed error reply")
            details = _recv_exact(sock, length).decode(errors="replace")
            return rpcerrors.from_status(
                rpcerrors.status_from_number(status), details, self.address
            )
        crc, src_len = _OK.unpack(bytes([status]) + _recv_exact(sock, _OK.size - 1))[1:]
        source = _recv_exact(sock, src_len).decode(errors="replace")
        length = _LENGTH64.unpack(_recv_exact(sock, 8))[0]
        if status == IN_SLOT:
            if link.slot is None or length > link.slot.size:
                raise PeerError(f"{self.address}: a reply in a slot it does not have")
            data = link.slot.take(length)
            with self._count_lock:
                self.slot_replies += 1
            return data, crc, source
        if length > MAX_BLOCK:
            raise PeerError(f"{self.address}: a {length}-byte block is too large")
        return _recv_exact(sock, length), crc, source

    def _release(self, link: _Link) -> None:
        try:
            self._idle.put_nowait(link)
        except queue.Full:
            link.close()

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
