"""`verifier bundle keygen|export|import`: signed watch-list bundles for partner agencies.

``bundle export`` reads the store beside a running server; ``bundle import``
writes the store itself, so it runs with the server stopped (a running server
imports through the Bundles RPC). Every import, accepted or refused, is on
the audit trail.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from verifier.config import Settings
from verifier.errors import VerifierError

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_ERROR = 2


def register(subparsers: argparse._SubParsersAction) -> None:
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
    from verifier.storage.faults import StoreError
    from verifier.watchlist.service import require_room
    from verifier.watchlist.store import WatchlistStore

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
