"""`verifier replica promote|status`: talks to a running server (as ``admin``
over mutual TLS when ``security.tls_dir`` is set). Every promotion is on the
audit trail. The partner bundles' commands are the watch-lists'
(:mod:`verifier.watchlist.bundle_cli`)."""

from __future__ import annotations

import argparse
import sys

import grpc

from verifier.config import Settings

EXIT_OK = 0
EXIT_ERROR = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    replica = subparsers.add_parser("replica", help="promote a replica, or show where a server stands")
    commands = replica.add_subparsers(dest="replica_command", required=True)
    promote = commands.add_parser("promote", help="turn the replica at ADDRESS into the primary, with a new epoch")
    promote.add_argument("--address", required=True, help="host:port of the replica")
    promote.set_defaults(handler=_promote)
    status = commands.add_parser("status", help="role, epoch, change sequence and data age of the server at ADDRESS")
    status.add_argument("--address", required=True, help="host:port of the server")
    status.set_defaults(handler=_status)


def _channel(settings: Settings, address: str) -> grpc.Channel:
    from verifier.client import credentials_from

    if settings.security.tls_dir is None:
        return grpc.insecure_channel(address)
    return grpc.secure_channel(address, credentials_from(settings.security.tls_dir, "admin"))


def _promote(args: argparse.Namespace, settings: Settings) -> int:
    from verifier.client import reason_of
    from verifier.v1 import replication_pb2 as rp
    from verifier.v1 import replication_pb2_grpc as rp_grpc

    with _channel(settings, args.address) as channel:
        try:
            done = rp_grpc.ReplicationStub(channel).Promote(rp.PromoteRequest(), timeout=30)
        except grpc.RpcError as error:
            print(f"error: {error.details()} [{reason_of(error) or error.code().name}]", file=sys.stderr)
            return EXIT_ERROR
    print(f"{args.address} is the primary now: epoch {done.epoch}, at change {done.seq}. Point the other replicas "
          "at it, and remove --replica-of from its configuration before it restarts.")
    return EXIT_OK


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from verifier.v1 import replication_pb2 as rp
    from verifier.v1 import replication_pb2_grpc as rp_grpc

    with _channel(settings, args.address) as channel:
        try:
            state = rp_grpc.ReplicationStub(channel).Status(rp.StatusRequest(), timeout=10)
        except grpc.RpcError as error:
            print(f"error: {error.details()} [{error.code().name}]", file=sys.stderr)
            return EXIT_ERROR
    following = f" of {state.primary} ({'connected' if state.connected else 'NOT connected'})" if state.primary else ""
    fenced = f"; FENCED: epoch {state.fenced_by} exists, no writes taken" if state.fenced_by else ""
    print(f"{state.role}{following}: epoch {state.epoch}, change {state.seq}, data age "
          f"{state.data_age_seconds:.1f} s{fenced}")
    return EXIT_OK
