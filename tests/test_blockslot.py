"""Shared-memory slots for block replies (dcfs.blockslot): a node maps only
a client's own slot, never a file an offer points it at."""

import hashlib
import mmap
import os
from pathlib import Path

import pytest

from dcfs import blockslot

KiB = 1024


def _offer(token: bytes, fd: int) -> bytes:
    return token + f"/proc/{os.getpid()}/fd/{fd}".encode()


def test_a_slot_carries_bytes_from_the_node_to_the_client() -> None:
    slot = blockslot.Slot(256 * KiB)
    mapped = blockslot.accept(slot.offer(), max_size=1 << 20)
    assert mapped is not None and mapped.size == 256 * KiB
    data = os.urandom(100 * KiB)
    assert mapped.put(data)
    assert bytes(slot.take(len(data))) == data
    assert not mapped.put(bytes(256 * KiB + 1))  # too large: the caller sends it instead
    with pytest.raises(ValueError):
        slot.take(256 * KiB + 1)
    mapped.close()
    slot.close()


def test_offers_that_name_anything_but_a_slot_are_declined(tmp_path: Path) -> None:
    slot = blockslot.Slot(64 * KiB)
    token = slot.offer()[: blockslot.TOKEN_SIZE]
    path = slot.offer()[blockslot.TOKEN_SIZE :]
    assert blockslot.accept(os.urandom(blockslot.TOKEN_SIZE) + path, 1 << 20) is None  # token
    assert blockslot.accept(token + path, max_size=32 * KiB) is None  # larger than allowed
    assert blockslot.accept(token[:5], 1 << 20) is None  # truncated
    assert blockslot.accept(token + b"/etc/passwd", 1 << 20) is None  # not a /proc fd link

    # A regular file that ends in the right token, named through /proc: its
    # contents must survive, or an offer could make a node write anywhere.
    victim = tmp_path / "victim"
    victim.write_bytes(bytes(64 * KiB) + token)
    before = hashlib.sha256(victim.read_bytes()).hexdigest()
    fd = os.open(victim, os.O_RDWR)
    try:
        assert blockslot.accept(_offer(token, fd), 1 << 20) is None
    finally:
        os.close(fd)
    assert hashlib.sha256(victim.read_bytes()).hexdigest() == before

    # A memory file of another name, with the token where a slot keeps it.
    other = os.memfd_create("not-a-slot")
    try:
        os.ftruncate(other, 64 * KiB + blockslot.TOKEN_SIZE)
        with mmap.mmap(other, 64 * KiB + blockslot.TOKEN_SIZE) as area:
            area[64 * KiB :] = token
        assert blockslot.accept(_offer(token, other), 1 << 20) is None
    finally:
        os.close(other)
    slot.close()
