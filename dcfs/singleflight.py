"""Per-key singleflight: concurrent callers for one key share one call.

Like JuiceFS's ``singleflight.go``: the first caller runs the function, the
others wait for its result (or its exception).
"""

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class _Call(Generic[V]):
    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: V | None = None
        self.error: BaseException | None = None


class SingleFlight(Generic[V]):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[Hashable, _Call[V]] = {}

    def do(self, key: Hashable, fn: Callable[[], V]) -> tuple[V, bool]:
        """Run ``fn`` once for all concurrent callers of ``key``.

        Returns ``(result, shared)``: ``shared`` is True for the callers that
        waited on another caller's run.
        """
        with self._lock:
            call = self._calls.get(key)
            leader = call is None
            if call is None:
                call = self._calls[key] = _Call()
        if not leader:
            call.done.wait()
            if call.error is not None:
                raise call.error
            return call.result, True  # type: ignore[return-value]
        try:
            call.result = fn()
            return call.result, False
        except BaseException as exc:
            call.error = exc
            raise
        finally:
            with self._lock:
                del self._calls[key]
            call.done.set()
