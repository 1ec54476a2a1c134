"""What a re-read copies from: the page-cache folios of a file read through
a dcfs mount, against the same bytes read on the plain directory.

    .venv/bin/python bench/folios.py

Reads a 256 MiB object through a cluster (``cold_cluster``) and a 256 MiB
file on the local disk, buffered, then maps each file, and looks up every
page's frame (``/proc/self/pagemap``) and its flags (``/proc/kpageflags``,
root only): a page is a small folio of its own, or the head or a tail page
of a large one. A re-read costs about the same per folio, so a filesystem
whose cache holds 2 MiB folios re-reads with 512 times fewer lookups.
"""

import collections
import mmap
import os
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from rigs import cold_cluster  # noqa: E402

MiB = 1024 * 1024
SIZE = 256 * MiB
_PRESENT = 1 << 63
_PFN_MASK = (1 << 55) - 1
_HEAD, _TAIL = 1 << 15, 1 << 16  # KPF_COMPOUND_HEAD, KPF_COMPOUND_TAIL


def folio_pages(path: Path) -> collections.Counter[str]:
    """Pages of ``path`` in the page cache, by kind: small, head, tail."""
    with path.open("rb") as f:
        while f.read(MiB):
            pass
        size = os.fstat(f.fileno()).st_size
        with mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ) as mapped:
            for offset in range(0, size, mmap.PAGESIZE):
                mapped[offset]  # map every page, so pagemap shows its frame
            start = next(
                int(line.split("-")[0], 16)
                for line in Path("/proc/self/maps").read_text().splitlines()
                if line.endswith(" " + str(path))
            )
            return _count(start, size // mmap.PAGESIZE)


def _count(start: int, pages: int) -> collections.Counter[str]:
    kinds: collections.Counter[str] = collections.Counter()
    pagemap = os.open("/proc/self/pagemap", os.O_RDONLY)
    flags = os.open("/proc/kpageflags", os.O_RDONLY)
    try:
        entries = os.pread(pagemap, 8 * pages, start // mmap.PAGESIZE * 8)
        for (entry,) in struct.iter_unpack("<Q", entries):
            if not entry & _PRESENT:
                kinds["absent"] += 1
                continue
            (bits,) = struct.unpack("<Q", os.pread(flags, 8, (entry & _PFN_MASK) * 8))
            kinds["head" if bits & _HEAD else "tail" if bits & _TAIL else "small"] += 1
    finally:
        os.close(pagemap)
        os.close(flags)
    return kinds


def main() -> None:
    with cold_cluster(SIZE, "0") as cold:
        through_dcfs = folio_pages(cold.path)
        local = cold.path.parent.parent / "big"  # the bytes cold_cluster uploaded
        plain = folio_pages(local)
    print(f"kernel {os.uname().release}; pages of a {SIZE // MiB} MiB file in the page cache:")
    for name, kinds in (("dcfs mount", through_dcfs), ("plain directory", plain)):
        folios = kinds["small"] + kinds["head"]
        print(f"  {name:<16} {dict(kinds)}: {folios} folios")


if __name__ == "__main__":
    main()
