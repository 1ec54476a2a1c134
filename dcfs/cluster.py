"""What participants ask the metadata service first: the bucket URL, the S3
endpoint and the block size of the cluster, and its live cache nodes."""

import grpc

from dcfs import rpc
from dcfs.errors import PeerError
from protos import dcfs_pb2, dcfs_pb2_grpc


def describe_rpc_error(exc: grpc.RpcError) -> str:
    if isinstance(exc, grpc.Call):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc)


def fetch_cluster_info(metadata_address: str, timeout: float = 10) -> dcfs_pb2.InfoReply:
    """Ask the metadata service for the cluster settings; :class:`PeerError`
    with a one-line message if it does not answer within ``timeout``."""
    stub = dcfs_pb2_grpc.MetadataStub(rpc.channel(metadata_address))
    try:
        reply: dcfs_pb2.InfoReply = stub.Info(
            dcfs_pb2.InfoRequest(), timeout=timeout, wait_for_ready=True
        )
    except grpc.RpcError as exc:
        code = exc.code().name if isinstance(exc, grpc.Call) else "error"
        raise PeerError(f"metadata service at {metadata_address} is unreachable ({code})") from None
    return reply


def list_cache_nodes(metadata_address: str, timeout: float = 5) -> list[dcfs_pb2.NodeInfo]:
    """The live cache nodes the metadata service lists; :class:`PeerError`
    with a one-line message if it does not answer."""
    stub = dcfs_pb2_grpc.MetadataStub(rpc.channel(metadata_address))
    try:
        reply: dcfs_pb2.MembersReply = stub.Members(dcfs_pb2.MembersRequest(), timeout=timeout)
    except grpc.RpcError as exc:
        raise PeerError(
            f"metadata service at {metadata_address}: {describe_rpc_error(exc)}"
        ) from None
    return list(reply.nodes)
