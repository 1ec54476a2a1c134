"""Domain errors. They carry a one-line message for users; errno values are
chosen only at the FUSE boundary and gRPC status codes only in servicers."""


class DcfsError(Exception):
    """Base of every error dcfs raises on purpose."""


class ConfigError(DcfsError):
    """Bad user input: a URL, a flag, a size, a path."""


class BucketError(DcfsError):
    """The bucket failed or refused a request (network, permissions, ...)."""


class ObjectNotFound(BucketError):
    """The object (or the bucket) does not exist."""


class ObjectChanged(BucketError):
    """The object no longer has the version (etag) we pinned: never mix versions."""


class CorruptBlock(DcfsError):
    """Bytes failed their checksum or identity check."""


class PeerError(DcfsError):
    """A cache node or the metadata service did not answer usefully."""


class InvalidRequest(DcfsError):
    """A malformed request from a peer (a gRPC message that makes no sense)."""
