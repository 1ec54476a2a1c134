"""gRPC servicer of the CacheNode service."""

import logging

import grpc

from cachenode.blocks import BlockService
from dcfs import rpcerrors, wire
from dcfs.errors import DcfsError
from protos import dcfs_pb2, dcfs_pb2_grpc

log = logging.getLogger("dcfs.cachenode")


class CacheNodeServicer(dcfs_pb2_grpc.CacheNodeServicer):
    def __init__(self, node_id: str, blocks: BlockService) -> None:
        self.node_id = node_id
        self.blocks = blocks

    def ReadBlock(
        self, request: dcfs_pb2.ReadBlockRequest, context: grpc.ServicerContext
    ) -> dcfs_pb2.ReadBlockReply:
        try:
            ref = wire.block_from_proto(request.block, self.blocks.block_size)
            data, source = self.blocks.read_block(ref)
        except DcfsError as exc:
            log.debug("ReadBlock failed: %s", exc)
            rpcerrors.abort(context, exc)
        return dcfs_pb2.ReadBlockReply(data=data, crc32=wire.checksum(data), source=source)

    def WarmBlock(
        self, request: dcfs_pb2.WarmBlockRequest, context: grpc.ServicerContext
    ) -> dcfs_pb2.WarmBlockReply:
        try:
            ref = wire.block_from_proto(request.block, self.blocks.block_size)
            source = self.blocks.warm_block(ref)
        except DcfsError as exc:
            log.debug("WarmBlock failed: %s", exc)
            rpcerrors.abort(context, exc)
        return dcfs_pb2.WarmBlockReply(source=source, bytes=ref.length)

    def Stats(
        self, request: dcfs_pb2.StatsRequest, context: grpc.ServicerContext
    ) -> dcfs_pb2.StatsReply:
        tiers = [
            dcfs_pb2.TierStats(
                name=t.name,
                hits=t.hits,
                misses=t.misses,
                bytes_served=t.bytes_served,
                evictions=t.evictions,
                checksum_failures=t.checksum_failures,
                used_bytes=t.used_bytes,
                capacity_bytes=t.capacity_bytes,
                blocks=t.blocks,
            )
            for t in self.blocks.cache.stats()
        ]
        return dcfs_pb2.StatsReply(
            node_id=self.node_id,
            tiers=tiers,
            bucket_fetches=self.blocks.bucket_fetches,
            bucket_bytes=self.blocks.bucket_bytes,
        )
