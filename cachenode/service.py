"""gRPC servicer of the CacheNode service."""

import logging
from typing import Any

import grpc

from cachenode.blocks import BlockService
from dcfs import rpcerrors, wire
from dcfs.checksum import crc32c
from dcfs.errors import DcfsError
from protos import dcfs_pb2

log = logging.getLogger("dcfs.cachenode")


class CacheNodeServicer:
    """The CacheNode service; registered by :func:`add_to_server`."""

    def __init__(self, node_id: str, blocks: BlockService) -> None:
        self.node_id = node_id
        self.blocks = blocks

    def serve_block(self, request: dcfs_pb2.ReadBlockRequest) -> tuple[bytes, int, str]:
        """``(block, crc32c, source)`` for a request over gRPC or the block
        stream; raises DcfsError (InvalidRequest for a malformed one)."""
        ref = wire.block_from_proto(request.block, self.blocks.block_size)
        offset, length = wire.part_from_proto(request, ref)
        if length < ref.length:
            part, source = self.blocks.read_part(ref, offset, length)
            return part, crc32c(part), source
        data, source = self.blocks.read_block(ref)
        return data, self.blocks.checksum(ref, data), source

    def ReadBlock(self, request: dcfs_pb2.ReadBlockRequest, context: grpc.ServicerContext) -> bytes:
        """Returns the serialized ReadBlockReply (see :func:`add_to_server`)."""
        try:
            data, crc, source = self.serve_block(request)
        except DcfsError as exc:
            log.debug("ReadBlock failed: %s", exc)
            rpcerrors.abort(context, exc)
        return wire.encode_block_reply(data, source, crc)

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

    def EmptyCache(
        self, request: dcfs_pb2.EmptyCacheRequest, context: grpc.ServicerContext
    ) -> dcfs_pb2.EmptyCacheReply:
        dropped = self.blocks.cache.empty()
        log.info("emptied the cache on request: %d bytes dropped", dropped)
        return dcfs_pb2.EmptyCacheReply(bytes_dropped=dropped)


def add_to_server(servicer: CacheNodeServicer, server: grpc.Server) -> None:
    """Like the generated ``add_CacheNodeServicer_to_server``, except that
    ReadBlock's reply is serialized by :func:`dcfs.wire.encode_block_reply`."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "ReadBlock": grpc.unary_unary_rpc_method_handler(
            servicer.ReadBlock,
            request_deserializer=dcfs_pb2.ReadBlockRequest.FromString,
            response_serializer=None,  # already bytes
        ),
        "Stats": grpc.unary_unary_rpc_method_handler(
            servicer.Stats,
            request_deserializer=dcfs_pb2.StatsRequest.FromString,
            response_serializer=dcfs_pb2.StatsReply.SerializeToString,
        ),
        "WarmBlock": grpc.unary_unary_rpc_method_handler(
            servicer.WarmBlock,
            request_deserializer=dcfs_pb2.WarmBlockRequest.FromString,
            response_serializer=dcfs_pb2.WarmBlockReply.SerializeToString,
        ),
        "EmptyCache": grpc.unary_unary_rpc_method_handler(
            servicer.EmptyCache,
            request_deserializer=dcfs_pb2.EmptyCacheRequest.FromString,
            response_serializer=dcfs_pb2.EmptyCacheReply.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("dcfs.CacheNode", handlers),)
    )
