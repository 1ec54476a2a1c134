"""The two-tier block cache (memory, then local disk) shared by the FUSE client
and the cache nodes."""

from dcfs.blockcache.disk import DiskTier
from dcfs.blockcache.memory import MemoryTier
from dcfs.blockcache.stats import TierStats
from dcfs.blockcache.tiered import BlockCache

__all__ = ["BlockCache", "DiskTier", "MemoryTier", "TierStats"]
