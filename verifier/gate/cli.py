"""`verifier screen LIVE --reference CHIP [--server ADDR]`: one gate transaction from the command line.

Prints the decision, reasons and scores as JSON; exit 0 ACCEPT, 3 RETRY,
4 REFER, 2 bad input (or a server that refused the call). Without
``--server`` the pipeline runs in this process against the configured
watch-list store; an unavailable store is a REFER, as
at the gate.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path

from verifier.config import Settings

EXIT_CODES = {"ACCEPT": 0, "RETRY": 3, "REFER": 4}
EXIT_ERROR = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "screen", help="one gate transaction: exit 0 ACCEPT, 3 RETRY, 4 REFER, 2 bad input"
    )
    parser.add_argument("live", type=Path, nargs="+", help="live frame(s) of the traveller")
    parser.add_argument("--reference", type=Path, required=True, help="the chip photo")
    parser.add_argument("--server", help="host:port of a running server (plaintext loopback); default: in-process")
    parser.add_argument("--gate-id", default="cli")
    parser.add_argument("--transaction-id", help="default: a fresh random id")
    parser.add_argument("--attempt", type=int, default=1)
    parser.set_defaults(handler=_screen)


def _screen(args: argparse.Namespace, settings: Settings) -> int:
    from google.protobuf.json_format import MessageToDict

    from verifier.errors import VerifierError
    from verifier.v1 import gate_pb2 as pb
    from verifier.v1 import verifier_pb2 as vpb

    try:
        frames = [path.read_bytes() for path in args.live]
        reference = args.reference.read_bytes()
    except OSError as error:
        print(f"error: cannot read {error.filename}: {error.strerror}", file=sys.stderr)
        return EXIT_ERROR
    request = pb.ScreenRequest(
        frames=[vpb.Image(data=frame) for frame in frames], reference=vpb.FaceSample(image=vpb.Image(data=reference)),
        gate_id=args.gate_id, transaction_id=args.transaction_id or uuid.uuid4().hex, attempt=args.attempt,
    )
    try:
        response = _remote(args.server, request) if args.server else _local(settings, request)
    except VerifierError as error:
        print(f"error: {error.message} [{error.reason.value}]", file=sys.stderr)
        return EXIT_ERROR
    answer = MessageToDict(response, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    print(json.dumps(answer, indent=1))
    return EXIT_CODES.get(pb.GateDecision.Name(response.decision), EXIT_ERROR)


def _remote(address: str, request: "pb.ScreenRequest") -> "pb.ScreenResponse":  # noqa: F821
    import grpc

    from verifier.errors import Reason, VerifierError
    from verifier.client import reason_of
    from verifier.v1 import gate_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            return gate_pb2_grpc.GateStub(channel).Screen(request, timeout=60)
        except grpc.RpcError as error:
            raise VerifierError(Reason.FIELD_INVALID, f"{address} refused: {error.code().name} {error.details()} "
                                f"({reason_of(error)})") from error


def _local(settings: Settings, request: "pb.ScreenRequest") -> "pb.ScreenResponse":  # noqa: F821
    from verifier.gate.service import GateService
    from verifier.server.app import build_service
    from verifier.server.convert import sample_from_pb
    from verifier.server.gate_servicer import outcome_to_pb
    from verifier.watchlist.service import WatchlistService

    service = build_service(settings)
    watchlist = None
    if settings.watchlist.enabled:
        try:
            watchlist = WatchlistService.open(settings, service.engine)
            watchlist.load()
        except Exception:  # noqa: BLE001 - an unavailable store is a finding (REFER), reported in the answer
            watchlist = None
    gate = GateService(settings, service, watchlist)
    outcome = gate.screen([frame.data for frame in request.frames], sample_from_pb(request.reference, "reference"),
                          request.attempt)
    return outcome_to_pb(outcome, request.gate_id, request.transaction_id)
