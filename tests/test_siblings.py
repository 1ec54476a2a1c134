"""Prefetch across the files of a directory read in listing order."""

from fsclient.siblings import SiblingIndex
from protos import dcfs_pb2


def _files(start: int, count: int) -> list[dcfs_pb2.Attr]:
    return [
        dcfs_pb2.Attr(inode=i, size=100, key=f"f{i}", etag="e") for i in range(start, start + count)
    ]


def test_in_order_opens_grow_the_depth_and_jumps_reset_it() -> None:
    index = SiblingIndex(max_depth=4)
    index.listed(1, True, [*_files(10, 5), dcfs_pb2.Attr(inode=99, is_dir=True)])
    index.listed(1, False, _files(15, 5))  # a second page of the same listing
    ahead = [[a.inode for a in index.opened(i)] for i in range(10, 15)]
    assert ahead == [[11], [12, 13], [13, 14, 15, 16], [14, 15, 16, 17], [15, 16, 17, 18]]
    assert index.opened(18) == []  # a jump: shuffled readers get nothing
    assert [a.inode for a in index.opened(19)] == []  # the last file has no next


def test_files_on_their_way_are_not_handed_out_again() -> None:
    """In a steady scan each open adds the one file entering the window;
    what the budget left out is offered again, and a jump starts afresh."""
    index = SiblingIndex(max_depth=4)
    index.listed(1, True, _files(10, 12))
    handed = []
    for i in range(10, 16):
        ahead = [a.inode for a in index.opened(i)]
        handed.append(ahead)
        index.fetching_ahead(i, 1 if i == 12 else len(ahead))  # the budget took one at 12
    assert handed == [[11], [12, 13], [14, 15, 16], [15, 16, 17], [18], [19]]
    assert [a.inode for a in index.opened(11)] == []  # a jump back: depth 0
    assert [a.inode for a in index.opened(12)] == [13]  # in order again, from the file opened


def test_unknown_files_and_directories_cost_nothing() -> None:
    index = SiblingIndex()
    assert index.opened(12345) == []
    index.listed(1, True, [dcfs_pb2.Attr(inode=5, is_dir=True), dcfs_pb2.Attr(inode=6, size=0)])
    assert index.opened(5) == [] and index.opened(6) == []


def test_a_relisting_replaces_the_old_order_and_memory_stays_bounded() -> None:
    index = SiblingIndex(max_entries=10)
    index.listed(1, True, _files(0, 6))
    index.listed(1, True, _files(100, 6))  # listed anew: the old entries are gone
    assert index.opened(3) == []
    index.listed(2, True, _files(200, 6))  # over the bound: directory 1 is forgotten
    assert index.opened(100) == []
    index.opened(200)
    assert [a.inode for a in index.opened(201)] == [202, 203]
