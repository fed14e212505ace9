"""`verifier registry init|register|verify|erase|stats|load`.

``init`` writes a development document key (never over an existing one);
``register``, ``verify`` and ``erase`` call a running server (plaintext
loopback, as `verifier screen --server`); ``stats`` reads the store; ``load``
migrates an existing registry into a running server from a CSV
(traveller_id, document_number, chip photo path, live capture path), one
Register call per row with a progress bar, resumable: rows already done are
recorded in ``<csv>.done`` and skipped on the next run.

Exit codes: 0 done (verify: a match), 1 verify: no match, 2 error or refusal.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from verifier.config import Settings

EXIT_OK, EXIT_NO_MATCH, EXIT_ERROR = 0, 1, 2


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("registry", help="the traveller registry")
    commands = parser.add_subparsers(dest="registry_command", required=True)
    init = commands.add_parser("init", help="write a random document key for development (never overwrites one)")
    init.set_defaults(handler=_init)
    add = commands.add_parser("register", help="register a traveller from a chip photo and a live capture")
    add.add_argument("traveller_id")
    add.add_argument("--document", required=True, help="the document number (sent; stored only as a keyed hash)")
    add.add_argument("--chip", type=Path, required=True)
    add.add_argument("--live", type=Path, required=True)
    add.add_argument("--gate", default="cli", help="the gate the consent was given at")
    add.add_argument("--consent-version", required=True, help="the version of the consent text shown")
    add.add_argument("--server", default="127.0.0.1:50051")
    add.set_defaults(handler=_register)
    verify = commands.add_parser("verify", help="a live capture against a traveller's enrolled templates")
    verify.add_argument("traveller_id")
    verify.add_argument("--live", type=Path, required=True)
    verify.add_argument("--server", default="127.0.0.1:50051")
    verify.set_defaults(handler=_verify)
    erase = commands.add_parser("erase", help="erase a traveller from store, index and snapshots")
    erase.add_argument("traveller_id")
    erase.add_argument("--server", default="127.0.0.1:50051")
    erase.set_defaults(handler=_erase)
    stats = commands.add_parser("stats", help="travellers and templates in the store")
    stats.set_defaults(handler=_stats)
    load = commands.add_parser("load", help="bulk-register from a CSV through a running server (resumable)")
    load.add_argument("csv", type=Path, help="rows: traveller_id,document_number,chip_path,live_path")
    load.add_argument("--gate", default="migration")
    load.add_argument("--consent-version", required=True)
    load.add_argument("--server", default="127.0.0.1:50051")
    load.set_defaults(handler=_load)


def _init(args: argparse.Namespace, settings: Settings) -> int:
    from verifier.registry.service import write_key

    path = settings.registry.key_file(settings.data_dir)
    if write_key(path):
        print(f"wrote a random development document key to {path}; production installs the agency's key there")
    else:
        print(f"{path} exists: kept")
    return EXIT_OK


def _call(address: str, method: str, request: object) -> object:
    import grpc

    from verifier.v1 import registry_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        return getattr(registry_pb2_grpc.RegistryStub(channel), method)(request, timeout=60)


def _refused(error: Exception) -> int:
    import grpc

    if isinstance(error, grpc.RpcError):
        trailers = dict(error.trailing_metadata() or ())  # type: ignore[attr-defined]
        print(f"error: {error.code().name} {trailers.get('verifier-reason', '')}: {error.details()}",  # type: ignore[attr-defined]
              file=sys.stderr)
    else:
        print(f"error: {error}", file=sys.stderr)
    return EXIT_ERROR


def _register_request(traveller_id: str, document: str, chip: Path, live: Path, gate: str, version: str):  # noqa: ANN202
    from verifier.v1 import registry_pb2 as rg
    from verifier.v1 import verifier_pb2 as vpb

    return rg.RegisterRequest(traveller_id=traveller_id, document_number=document,
                              chip_photo=vpb.Image(data=chip.read_bytes()), live_capture=vpb.Image(data=live.read_bytes()),
                              consent=rg.Consent(gate_id=gate, text_version=version))


def _register(args: argparse.Namespace, settings: Settings) -> int:
    from google.protobuf.json_format import MessageToDict

    try:
        response = _call(args.server, "Register", _register_request(
            args.traveller_id, args.document, args.chip, args.live, args.gate, args.consent_version))
    except Exception as error:  # noqa: BLE001 - reported with its reason
        return _refused(error)
    print(json.dumps(MessageToDict(response), indent=2))  # type: ignore[arg-type]
    return EXIT_OK


def _verify(args: argparse.Namespace, settings: Settings) -> int:
    from google.protobuf.json_format import MessageToDict

    from verifier.v1 import registry_pb2 as rg
    from verifier.v1 import verifier_pb2 as vpb

    try:
        response = _call(args.server, "VerifyTraveller", rg.VerifyTravellerRequest(
            traveller_id=args.traveller_id, live_capture=vpb.Image(data=args.live.read_bytes())))
    except Exception as error:  # noqa: BLE001
        return _refused(error)
    print(json.dumps(MessageToDict(response, always_print_fields_with_no_presence=True), indent=2))  # type: ignore[arg-type]
    return EXIT_OK if response.match else EXIT_NO_MATCH  # type: ignore[attr-defined]


def _erase(args: argparse.Namespace, settings: Settings) -> int:
    from verifier.v1 import registry_pb2 as rg

    try:
        _call(args.server, "EraseTraveller", rg.EraseTravellerRequest(traveller_id=args.traveller_id))
    except Exception as error:  # noqa: BLE001
        return _refused(error)
    print(f"erased {args.traveller_id}")
    return EXIT_OK


def _stats(args: argparse.Namespace, settings: Settings) -> int:
    from verifier.watchlist.cli import readonly_store

    with readonly_store(settings) as store, store.reading() as conn:
        try:
            travellers = conn.execute("SELECT COUNT(*) FROM travellers").fetchone()[0]
            templates = conn.execute("SELECT model_id, COUNT(*) FROM traveller_templates GROUP BY model_id").fetchall()
        except Exception:  # noqa: BLE001 - a store the registry never used has no registry tables
            travellers, templates = 0, []
    snapshot = settings.registry.snapshot_file(settings.data_dir)
    print(json.dumps({"travellers": travellers, "templates": dict(templates), "index": settings.registry.index,
                      "snapshot": str(snapshot) if snapshot is not None and snapshot.exists() else None}, indent=2))
    return EXIT_OK


def _load(args: argparse.Namespace, settings: Settings) -> int:
    import grpc
    from tqdm import tqdm

    from verifier.v1 import registry_pb2_grpc

    done_file = args.csv.with_name(args.csv.name + ".done")
    done = set(done_file.read_text().split()) if done_file.exists() else set()
    with args.csv.open(newline="") as source:
        rows = [row for row in csv.reader(source) if row and not row[0].startswith("#")]
    todo = [row for row in rows if row[0] not in done]
    refused = 0
    with grpc.insecure_channel(args.server) as channel, done_file.open("a") as record:
        stub = registry_pb2_grpc.RegistryStub(channel)
        for traveller_id, document, chip, live in tqdm(todo, desc="registering", unit="traveller",
                                                      initial=len(rows) - len(todo), total=len(rows)):
            try:
                stub.Register(_register_request(traveller_id, document, Path(chip), Path(live), args.gate,
                                                args.consent_version), timeout=60)
            except grpc.RpcError as error:
                reason = dict(error.trailing_metadata() or ()).get("verifier-reason", "")
                if reason != "SUBJECT_EXISTS":  # registered by an earlier, interrupted run
                    refused += 1
                    print(f"{traveller_id}: {error.code().name} {reason}: {error.details()}", file=sys.stderr)
                    continue
            record.write(traveller_id + "\n")
            record.flush()
    print(f"{len(rows) - refused} of {len(rows)} registered; {refused} refused (rerun to retry them)")
    return EXIT_OK if not refused else EXIT_ERROR
