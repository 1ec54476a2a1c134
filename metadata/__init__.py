"""The metadata service: the bucket's namespace with stable inode numbers (lmdb),
its sync from the bucket, the cache-node membership registry and their gRPC
servicer. The core is synchronous and thread-safe; gRPC lives only in
:mod:`metadata.servicer` (the RPC edge) and :mod:`metadata.service` (the daemon).
"""

from metadata.membership import Membership
from metadata.model import ROOT_INODE, Attr, Node
from metadata.service import MetadataServer, serve
from metadata.store import NamespaceStore, NoSuchInode, NotADirectory
from metadata.sync import SyncCancelled, SyncReport, sync_from_bucket

__all__ = [
    "ROOT_INODE",
    "Attr",
    "Membership",
    "MetadataServer",
    "NamespaceStore",
    "NoSuchInode",
    "Node",
    "NotADirectory",
    "SyncCancelled",
    "SyncReport",
    "serve",
    "sync_from_bucket",
]
