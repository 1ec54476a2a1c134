"""Sequential-read detection: a per-handle window that grows 1 -> 2 -> 4 ...
blocks while reads follow each other, and resets on a jump.

The kernel issues readahead requests concurrently, so they can arrive a little
out of order: a read within ``slack`` bytes of the expected offset still
counts as sequential."""

from dataclasses import dataclass


@dataclass(slots=True)
class PrefetchWindow:
    max_blocks: int
    slack: int = 1024 * 1024
    next_offset: int = 0
    blocks: int = 0
    # Blocks before this index were handed to the prefetcher already in this
    # sequential run: each is considered once, not on every read.
    issued_until: int = 0

    def follows(self, offset: int) -> bool:
        """Whether a read at ``offset`` continues this handle's sequence."""
        return abs(offset - self.next_offset) <= self.slack

    def unread_from(self, offset: int) -> int:
        """For a read at ``offset``, where the bytes this handle has not just
        read in sequence begin (0 after a jump): a block that starts before
        it is being continued, not used anew."""
        return self.next_offset if self.follows(offset) else 0

    def advise(self, offset: int, size: int, block_size: int, block_count: int) -> range:
        """Record a read; return the block indexes worth fetching ahead of it."""
        sequential = self.follows(offset)
        self.next_offset = max(self.next_offset, offset + size) if sequential else offset + size
        if not sequential or self.max_blocks <= 0:
            self.blocks = 0
            self.issued_until = 0
            return range(0)
        self.blocks = min(self.max_blocks, max(1, self.blocks * 2))
        first = (offset + size - 1) // block_size + 1
        return range(first, min(block_count, first + self.blocks))
