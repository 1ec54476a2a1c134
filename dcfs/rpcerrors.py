"""Domain errors <-> gRPC status codes, in one place for servers and clients."""

from typing import NoReturn

import grpc

from dcfs.errors import (
    BucketError,
    CorruptBlock,
    DcfsError,
    InvalidRequest,
    ObjectChanged,
    ObjectNotFound,
    PeerError,
)

_TO_STATUS: list[tuple[type[DcfsError], grpc.StatusCode]] = [
    (ObjectChanged, grpc.StatusCode.FAILED_PRECONDITION),
    (ObjectNotFound, grpc.StatusCode.NOT_FOUND),
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (CorruptBlock, grpc.StatusCode.DATA_LOSS),
    (BucketError, grpc.StatusCode.UNAVAILABLE),
]


def status_of(exc: DcfsError) -> grpc.StatusCode:
    """The status code that matches ``exc``."""
    for cls, code in _TO_STATUS:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def abort(context: grpc.ServicerContext, exc: DcfsError) -> NoReturn:
    """End the call with the status code that matches ``exc``."""
    context.abort(status_of(exc), str(exc))
    raise AssertionError("context.abort returned")


def from_rpc_error(exc: grpc.RpcError, peer: str) -> DcfsError:
    """The domain error a failed call means; :class:`PeerError` when the peer
    (not the object) is the problem, so the caller may try another source."""
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (exc.details() if isinstance(exc, grpc.Call) else None) or str(code)
    return from_status(code, details, peer)


_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def status_from_number(number: int) -> grpc.StatusCode:
    """The status code a number on the wire stands for (UNKNOWN if none)."""
    return _BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


def from_status(code: grpc.StatusCode, details: str, peer: str) -> DcfsError:
    """The domain error a status from ``peer`` means (see :func:`from_rpc_error`)."""
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return ObjectChanged(details)
    if code == grpc.StatusCode.NOT_FOUND:
        return ObjectNotFound(details)
    return PeerError(f"{peer}: {code.name.lower()}: {details}")
