"""Assembles a cache node: cluster settings from the metadata service, the
bucket, the two tiers, the gRPC server and the membership agent."""

import logging
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from cachenode.agent import MembershipAgent
from cachenode.blocks import BlockService
from cachenode.service import CacheNodeServicer, add_to_server
from dcfs import heap, rpc
from dcfs.blockcache import BlockCache, DiskTier, MemoryTier
from dcfs.blockstream import BlockStreamServer
from dcfs.checksum import BlockChecksums
from dcfs.cluster import fetch_cluster_info
from dcfs.objstore import open_store
from protos import dcfs_pb2, dcfs_pb2_grpc

log = logging.getLogger("dcfs.cachenode")


@dataclass(frozen=True)
class CacheNodeConfig:
    metadata: str
    listen: str
    cache_dir: Path
    memory: int
    disk: int
    free_space_ratio: float = 0.1  # of the disk tier's filesystem, left to others
    advertise: str = ""  # address clients use; defaults to ``listen``
    node_id: str = ""
    # The block stream's HOST:PORT (port 0: any free port on the host of
    # ``listen``); "" turns it off and clients read blocks over gRPC.
    block_listen: str = "auto"
    pretouch: bool = False  # fault in the memory tier at start (dcfs.heap)


class CacheNodeServer:
    def __init__(self, config: CacheNodeConfig) -> None:
        self.config = config
        heap.reuse_freed_memory()
        if config.pretouch:  # first: before any thread picks a malloc arena
            heap.pretouch(config.memory)
        info = fetch_cluster_info(config.metadata)
        self.store = open_store(info.bucket_url, info.endpoint_url or None)
        disk = (
            DiskTier(
                config.cache_dir,
                config.disk,
                config.free_space_ratio,
                bypass_page_cache=True,
            )
            if config.disk > 0
            else None
        )
        checksums = BlockChecksums()
        cache = BlockCache(MemoryTier(config.memory), disk, checksum=checksums.of)
        self.blocks = BlockService(cache, self.store, info.block_size, checksums)
        self.node_id = config.node_id or _stable_node_id(config.cache_dir)
        self.server = rpc.make_server()
        servicer = CacheNodeServicer(self.node_id, self.blocks)
        add_to_server(servicer, self.server)
        rpc.bind(self.server, config.listen)
        self.stream: BlockStreamServer | None = None
        block_address = ""
        if config.block_listen:
            if config.block_listen == "auto":
                host, port = rpc.parse_address(config.listen)[0], 0
            else:
                host, port = rpc.parse_address(config.block_listen)
            self.stream = BlockStreamServer(host, port, servicer.serve_block)
            advertise_host = (config.advertise or config.listen).rpartition(":")[0]
            block_address = f"{advertise_host}:{self.stream.port}"
        node = dcfs_pb2.NodeInfo(
            node_id=self.node_id,
            address=config.advertise or config.listen,
            capacity=config.memory + config.disk,
            block_address=block_address,
        )
        metadata = dcfs_pb2_grpc.MetadataStub(rpc.channel(config.metadata))
        self.agent = MembershipAgent(metadata, node)
        self._stopped = threading.Event()

    def start(self) -> None:
        self.server.start()
        if self.stream is not None:
            self.stream.start()
        self.agent.start()
        log.info(
            "cache node %s serving on %s (bucket %s)",
            self.node_id,
            self.config.listen,
            self.store.url,
        )

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.agent.stop()
        if self.stream is not None:
            self.stream.stop()
        self.server.stop(grace=2).wait()
        self.blocks.cache.close()
        self.store.close()


def _stable_node_id(cache_dir: Path) -> str:
    """A node keeps its id across restarts (its disk tier is still valid)."""
    cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    id_file = cache_dir / "node-id"
    try:
        return id_file.read_text().strip()
    except FileNotFoundError:
        node_id = uuid.uuid4().hex[:12]
        id_file.write_text(node_id + "\n")
        return node_id
