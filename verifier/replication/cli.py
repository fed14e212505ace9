"""`verifier replica promote|status` and `verifier bundle keygen|export|import`.

``replica`` talks to a running server (as ``admin`` over mutual TLS when
``security.tls_dir`` is set). ``bundle export`` reads the store beside a
running server; ``bundle import`` writes the store itself, so it runs with
the server stopped (a running server imports through the Bundles RPC). Every
import, accepted or refused, and every promotion is on the audit trail.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import grpc

from verifier.config import Settings
from verifier.errors import VerifierError

EXIT_OK = 0
EXIT_REFUSED = 1
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

    bundle = subparsers.add_parser("bundle", help="signed watch-list bundles for partner agencies")
    actions = bundle.add_subparsers(dest="bundle_command", required=True)
    keygen = actions.add_parser("keygen", help="create an Ed25519 key pair: ISSUER.key (keep) and ISSUER.pub (give)")
    keygen.add_argument("--issuer", required=True, help="the issuing agency's id, as partners will name its key")
    keygen.add_argument("-o", "--output", type=Path, default=Path("."), help="folder for the two files")
    keygen.set_defaults(handler=_keygen)
    export = actions.add_parser("export", help="sign one watch-list into a bundle file")
    export.add_argument("--watchlist", required=True)
    export.add_argument("--key", type=Path, required=True, help="the issuer's private key (ISSUER.key)")
    export.add_argument("--issuer", help="the issuing agency; default: the key file's name")
    export.add_argument("--sequence", type=int, help="must grow with every bundle; default: the time in ms")
    export.add_argument("--valid-days", type=float, default=30.0, help="the bundle expires this long after now")
    export.add_argument("-o", "--output", type=Path, required=True)
    export.set_defaults(handler=_export)
    load = actions.add_parser("import", help="check a partner's bundle and replace its list (server stopped)")
    load.add_argument("file", type=Path)
    load.set_defaults(handler=_import)


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


def _keygen(args: argparse.Namespace, settings: Settings) -> int:
    from verifier.watchlist.bundles import keygen

    try:
        private, public, key = keygen(args.issuer, args.output)
    except (FileExistsError, VerifierError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    print(f"key id {key}\nsigning key (keep secret): {private}\npublic key (give to partners): {public}")
    return EXIT_OK


def _export(args: argparse.Namespace, settings: Settings) -> int:
    from verifier.watchlist.bundles import export_bundle, load_signing_key
    from verifier.watchlist.cli import readonly_store

    signing = load_signing_key(args.key)
    issuer = args.issuer or args.key.name.split(".", 1)[0]
    sequence = args.sequence if args.sequence is not None else int(time.time() * 1000)
    with readonly_store(settings) as store:
        try:
            data = export_bundle(store, args.watchlist, signing, issuer, sequence,
                                 time.time() + args.valid_days * 86400)
        except VerifierError as error:
            print(f"error: {error.message} [{error.reason.value}]", file=sys.stderr)
            return EXIT_ERROR
    args.output.write_bytes(data)
    print(f"bundle {sequence} of {issuer}: watch-list {args.watchlist!r}, {len(data)} bytes, {args.output}")
    return EXIT_OK


def _import(args: argparse.Namespace, settings: Settings) -> int:
    from verifier.pipeline import FaceEngine
    from verifier.security.audit import CHANGE, AuditLog, Entry, local_operator, recorded_change
    from verifier.watchlist.bundles import import_bundle, trusted_keys
    from verifier.watchlist.service import require_room
    from verifier.watchlist.store import StoreError, WatchlistStore

    config = settings.watchlist
    try:
        store = WatchlistStore.open(config.store_file(settings.data_dir), config.busy_timeout_seconds)
    except StoreError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    audit = AuditLog.for_settings(settings)
    identity, role = local_operator()
    entry = Entry(identity=identity, role=role, rpc="cli:bundle import", kind=CHANGE, outcome="",
                  targets=(str(args.file),))

    def replace(name: str, description: str, provenance: dict, subjects: list[dict]) -> object:
        require_room(store, name, config.max_watchlists)
        return store.replace_partner_list(name, description, provenance, subjects)

    try:
        bundle, subjects = recorded_change(audit, entry, lambda: import_bundle(
            args.file.read_bytes(), trusted_keys(settings.bundles.trusted_keys_dir), settings.bundles.max_bytes,
            FaceEngine.from_settings(settings), store.partner_sequence, replace, config.max_templates_per_subject,
        ))
    except VerifierError as error:
        cause = error.details.get("cause", "")
        print(f"refused ({cause or error.reason.value}): {error.message}; nothing was imported", file=sys.stderr)
        return EXIT_REFUSED
    finally:
        store.close()
        audit.close()
    print(f"imported bundle {bundle.sequence} of {bundle.issuer}: {subjects} subjects now in {bundle.target!r}")
    return EXIT_OK
