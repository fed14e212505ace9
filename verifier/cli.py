"""The `verifier` command: serve, verify two photos, manage the model pack.

Each area adds its own subcommands through a ``register(subparsers)`` function,
so this file only wires them together. The commands that run a service in this
process (verify, screen without ``--server``) get it from the composition
root, verifier.app.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import uuid
from pathlib import Path

from pydantic import ValidationError

from verifier.config import Settings, get_settings
from verifier.errors import ModelPackError, VerifierError
from verifier.extras import MissingExtra
from verifier.registry.cli import register as register_registry
from verifier.watchlist.bundle_cli import register as register_bundles
from verifier.watchlist.cli import register as register_watchlist
from verifier.evaluation.cli import register as register_eval
from verifier.evaluation.pad import register as register_pad_eval
from verifier.evaluation.site_cli import register as register_site_calibration
from verifier.replication.cli import register as register_replication
from verifier.security.cli import register as register_security

EXIT_MATCH = 0
EXIT_NO_MATCH = 1
EXIT_ERROR = 2
# `verifier screen`: the gate's decision as the exit status (EXIT_ERROR for bad input).
SCREEN_EXIT_CODES = {"ACCEPT": 0, "RETRY": 3, "REFER": 4}


def _models_fetch(args: argparse.Namespace, settings: Settings) -> int:
    from verifier.modelzoo.fetch import fetch_asset, fetch_pack
    from verifier.modelzoo.manifest import load_manifest

    manifest = load_manifest(settings.models.manifest)
    for result in fetch_pack(manifest, settings.models.cache_dir, force=args.force):
        state = "fetched, verified, prepared" if result.fetched else "cached, verified"
        print(f"{result.name:28s} {state:28s} sha256 {result.sha256[:16]}…  {result.path}")
    if args.assets:
        for spec in manifest.assets.values():
            paths = fetch_asset(spec, settings.models.cache_dir)
            print(f"{spec.name:28s} {len(paths)} files in {next(iter(paths.values())).parent}")
    return 0


def _models_list(args: argparse.Namespace, settings: Settings) -> int:
    from verifier.modelzoo.fetch import model_path
    from verifier.modelzoo.manifest import load_manifest

    manifest = load_manifest(settings.models.manifest)
    in_pack = {name for names in manifest.packs.get(settings.models.pack, {}).values() for name in names}
    for spec in manifest.models.values():
        cached = "cached" if model_path(settings.models.cache_dir, spec).exists() else "not fetched"
        marker = "*" if spec.name in in_pack else " "
        source = f"{spec.source.registry}:{spec.source.package}@{spec.source.version}"
        print(f"{marker} {spec.name:26s} {spec.task:10s} {cached:12s} {spec.model_id:40s} {source}")
    print(f"(* = in pack {settings.models.pack!r})")
    return 0


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from verifier.app import serve
    from verifier.server.edge import EdgeConfigError

    if args.port is not None:
        settings.server.port = args.port
    if args.replica_of is not None:
        settings.replication.replica_of = args.replica_of
    try:
        serve(settings)
    except EdgeConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    return 0


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        print(f"error: cannot read {path}: {exc.strerror}", file=sys.stderr)
        raise SystemExit(EXIT_ERROR) from exc


def _verify(args: argparse.Namespace, settings: Settings) -> int:
    from verifier.app import build_service

    service = build_service(settings)
    probe, reference = _read(args.probe), _read(args.reference)
    try:
        outcome = service.verify(probe, reference)
    except VerifierError as error:
        side = error.details.get("side")
        which = {"probe": args.probe, "reference": args.reference}.get(side or "", "input")
        print(f"error: {which}: {error.message} [{error.reason.value}]", file=sys.stderr)
        return EXIT_ERROR
    decision = outcome.decision
    verdict = "match" if decision.match else "no match"
    print(
        f"{verdict}: score {decision.score:.4f}, threshold {decision.threshold.value:.4f} "
        f"(FMR {decision.threshold.false_match_rate:g}, {decision.threshold.source})"
    )
    stages = ", ".join(f"{k} {v:.1f} ms" for k, v in outcome.timings_ms.items())
    print(f"model {outcome.model_id}; {stages}")
    return EXIT_MATCH if decision.match else EXIT_NO_MATCH


def _screen(args: argparse.Namespace, settings: Settings) -> int:
    """Prints the decision, reasons and scores as JSON. Without ``--server`` the
    pipeline runs in this process against the configured watch-list store."""
    from google.protobuf.json_format import MessageToDict

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
        if args.server:
            response = _screen_remote(args.server, request)
        else:
            from verifier.app import screen_locally

            response = screen_locally(settings, request)
    except VerifierError as error:
        print(f"error: {error.message} [{error.reason.value}]", file=sys.stderr)
        return EXIT_ERROR
    answer = MessageToDict(response, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    print(json.dumps(answer, indent=1))
    return SCREEN_EXIT_CODES.get(pb.GateDecision.Name(response.decision), EXIT_ERROR)


def _screen_remote(address: str, request: "pb.ScreenRequest") -> "pb.ScreenResponse":  # noqa: F821
    import grpc

    from verifier.client import reason_of
    from verifier.errors import Reason
    from verifier.v1 import gate_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            return gate_pb2_grpc.GateStub(channel).Screen(request, timeout=60)
        except grpc.RpcError as error:
            raise VerifierError(Reason.FIELD_INVALID, f"{address} refused: {error.code().name} {error.details()} "
                                f"({reason_of(error)})") from error


def _register_screen(commands: argparse._SubParsersAction) -> None:
    screen = commands.add_parser(
        "screen", help="one gate transaction: exit 0 ACCEPT, 3 RETRY, 4 REFER, 2 bad input"
    )
    screen.add_argument("live", type=Path, nargs="+", help="live frame(s) of the traveller")
    screen.add_argument("--reference", type=Path, required=True, help="the chip photo")
    screen.add_argument("--server", help="host:port of a running server (plaintext loopback); default: in-process")
    screen.add_argument("--gate-id", default="cli")
    screen.add_argument("--transaction-id", help="default: a fresh random id")
    screen.add_argument("--attempt", type=int, default=1)
    screen.set_defaults(handler=_screen)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="verifier", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gRPC service (127.0.0.1 by default)")
    serve.add_argument("--port", type=int, help="override VERIFIER_SERVER__PORT")
    serve.add_argument("--replica-of", metavar="ADDR",
                       help="serve as a read-only replica of the primary at host:port (VERIFIER_REPLICATION__REPLICA_OF)")
    serve.set_defaults(handler=_serve)

    verify = commands.add_parser(
        "verify", help="compare two photos; exit 0 match, 1 no match, 2 error",
    )
    verify.add_argument("probe", type=Path)
    verify.add_argument("reference", type=Path)
    verify.set_defaults(handler=_verify)

    models = commands.add_parser("models", help="fetch, verify and list the model pack")
    model_commands = models.add_subparsers(dest="models_command", required=True)
    fetch = model_commands.add_parser("fetch", help="download, sha256-check and prepare every model")
    fetch.add_argument("--force", action="store_true", help="fetch again even when the cache verifies")
    fetch.add_argument("--assets", action="store_true", help="also fetch the test photos named in the manifest")
    fetch.set_defaults(handler=_models_fetch)
    listing = model_commands.add_parser("list", help="models in the manifest and whether they are cached")
    listing.set_defaults(handler=_models_list)
    register_watchlist(commands)
    register_eval(commands)
    register_pad_eval(commands)
    register_site_calibration(commands)
    register_security(commands)
    register_replication(commands)
    register_bundles(commands)
    _register_screen(commands)
    register_registry(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("tflite2onnx", "faiss.loader"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        settings = get_settings()
    except ValidationError as error:
        for problem in error.errors():
            name = ".".join(str(part) for part in problem["loc"])
            variable = "VERIFIER_" + "__".join(str(part) for part in problem["loc"]).upper()
            print(f"error: setting {name} ({variable}) = {problem.get('input')!r}: {problem['msg']}", file=sys.stderr)
        return EXIT_ERROR
    try:
        return int(args.handler(args, settings))
    except (ModelPackError, MissingExtra) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
