"""The change stream's logic, apart from gRPC: from a client's generation to
the batches it needs, then new batches as they are committed.

A batch's ``generation`` is what the client is up to date with once it has
applied the batch: a generation whose rows did not all fit is announced only
by the batch that completes it, so a client that reconnects with the last
generation it saw never misses a row (it may see some twice: invalidating
twice is harmless). When the rows a client needs are gone (it fell behind
the bounded log) or belong to another database, it gets a reset: drop every
cached name and attribute, then follow from the current generation.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from metadata import changelog
from metadata.changelog import Change
from metadata.store import NamespaceStore

# An empty batch this often on an idle stream: the client sees the stream is
# alive, and the server sees a client that vanished.
KEEPALIVE_S = 10.0
BATCH_ROWS = 5000


@dataclass(frozen=True, slots=True)
class Batch:
    generation: int
    changes: list[Change] = field(default_factory=list)
    reset: bool = False


def follow(
    store: NamespaceStore,
    since: int,
    namespace_id: str,
    stop: Callable[[], bool],
    keepalive_s: float = KEEPALIVE_S,
    limit: int = BATCH_ROWS,
) -> Iterator[Batch]:
    """Batches for a client whose caches reflect generation ``since`` of the
    database ``namespace_id`` ("" = the one it asks), until ``stop()``.

    The first batch comes at once (empty unless it is a reset), so the
    client knows the stream is up.
    """
    page = store.changes(changelog.first_key(since + 1), limit)
    foreign = bool(namespace_id) and namespace_id != store.namespace_id
    if foreign or since > page.generation or since < page.floor:
        complete = page.generation
        yield Batch(complete, reset=True)
    else:
        complete = since
        yield Batch(complete)
    start = changelog.first_key(complete + 1)
    while not stop():
        page = store.changes(start, limit)
        if page.floor > complete:
            # Trimmed before this client read it: it cannot catch up row by row.
            complete = page.generation
            start = changelog.first_key(complete + 1)
            yield Batch(complete, reset=True)
            continue
        if page.rows:
            done = page.rows[-1][0] - 1 if page.full else page.generation
            complete = max(complete, done)
            start = page.next_key
            yield Batch(complete, [change for _, change in page.rows])
            continue
        complete = max(complete, page.generation)
        if store.wait_for_generation(complete, keepalive_s, stop) == complete and not stop():
            yield Batch(complete)
