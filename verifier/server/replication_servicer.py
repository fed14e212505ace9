"""The Replication servicer: the feed, snapshots, state and promotion over gRPC."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from verifier.errors import Reason, VerifierError
from verifier.replication.feed import Feed, Heartbeat
from verifier.replication.state import ReplicaState
from verifier.server.errors import mapped, status_for
from verifier.v1 import replication_pb2 as rp
from verifier.v1 import replication_pb2_grpc as rp_grpc
from verifier.storage.faults import StoreError
from verifier.storage.feed import Change

log = logging.getLogger(__name__)


def timestamp(epoch_seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(epoch_seconds * 1e9))
    return stamp


def _message(item: Change | Heartbeat) -> rp.FeedMessage:
    if isinstance(item, Change):
        return rp.FeedMessage(change=rp.Change(
            seq=item.seq, epoch=item.epoch, kind=item.kind, payload=item.payload,
            committed=timestamp(item.committed_at),
        ))
    return rp.FeedMessage(heartbeat=rp.Heartbeat(primary_seq=item.primary_seq, epoch=item.epoch,
                                                 sent=timestamp(item.sent)))


class ReplicationServicer(rp_grpc.ReplicationServicer):
    def __init__(self, feed: Feed, state: ReplicaState, chunk_bytes: int, scratch: Path) -> None:
        self.feed = feed
        self.state = state
        self.chunk_bytes = chunk_bytes
        self.scratch = scratch

    @mapped
    def Follow(
        self, request_iterator: Iterator[rp.FollowRequest], context: grpc.ServicerContext
    ) -> Iterator[rp.FeedMessage]:
        first = next(request_iterator, None)
        if first is None or not first.HasField("hello"):
            raise VerifierError(Reason.REQUEST_INCOMPLETE, "a follower starts with a hello")
        hello = first.hello
        self.feed.admit(hello.store_id, hello.from_seq, hello.epoch, hello.last_epoch)

        def read_acks() -> None:
            try:
                for request in request_iterator:
                    if request.HasField("applied_seq"):
                        self.feed.acknowledged(request.applied_seq)
            except grpc.RpcError:
                pass  # the follower went away; the stream ends with it

        threading.Thread(target=read_acks, name="replica-acks", daemon=True).start()
        return (_message(item) for item in self.feed.changes(hello.from_seq - 1, context.is_active))

    @mapped
    def Snapshot(self, request: rp.SnapshotRequest, context: grpc.ServicerContext) -> Iterator[rp.SnapshotChunk]:
        self.scratch.mkdir(mode=0o700, parents=True, exist_ok=True)
        peer = context.peer()

        def chunks() -> Iterator[rp.SnapshotChunk]:
            # The index first (while a store copy is made, when one is needed);
            # digests are computed as the bytes go out: no pass over the files
            # before the first byte is sent. The store stays pinned until the last byte.
            try:
                with self.feed.snapshot(self.scratch) as snapshot:
                    log.info("sending the snapshot at change %d to %s", snapshot.position.seq, peer)
                    index_size = 0
                    if snapshot.index is not None:
                        for data in snapshot.index.chunks():
                            index_size += len(data)
                            yield rp.SnapshotChunk(index_data=data)
                    image = snapshot.store.result()
                    digest = hashlib.sha256()
                    with image.path.open("rb") as source:
                        left = image.size
                        while left:
                            data = source.read(min(self.chunk_bytes, left))
                            if not data:
                                raise StoreError(f"{image.path} ended {left} bytes short of the snapshot")
                            left -= len(data)
                            digest.update(data)
                            yield rp.SnapshotChunk(data=data)
                    position = snapshot.position
                    yield rp.SnapshotChunk(trailer=rp.SnapshotTrailer(
                        store_id=position.store_id, seq=position.seq, epoch=position.epoch, size=image.size,
                        sha256=digest.hexdigest(), index_size=index_size,
                    ))
            except VerifierError as error:
                context.abort_with_status(status_for(error))

        return chunks()

    @mapped
    def Status(self, request: rp.StatusRequest, context: grpc.ServicerContext) -> rp.StatusResponse:
        fresh = self.state.freshness()
        position = self.feed.service.store.position()
        return rp.StatusResponse(
            role=fresh.role, primary=fresh.primary, seq=position.seq, epoch=position.epoch,
            connected=fresh.connected, data_as_of=timestamp(fresh.data_as_of), data_age_seconds=fresh.age_seconds,
            fenced_by=position.fenced_by if position.fenced_by > position.epoch else 0,
        )

    @mapped
    def Promote(self, request: rp.PromoteRequest, context: grpc.ServicerContext) -> rp.PromoteResponse:
        epoch = self.feed.service.promote()
        self.state.promoted()
        log.warning("promoted to primary at epoch %d", epoch)
        return rp.PromoteResponse(epoch=epoch, seq=self.feed.service.store.last_seq)
