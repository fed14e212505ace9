"""`verifier certs init DIR` and `verifier audit verify|export`.

``audit verify`` exits 0 and prints the record count and head hash when the
chain is intact, 1 naming the first bad record otherwise, 2 when there is no
trail to read. Both audit commands only read, beside a running server.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from verifier.config import Settings
from verifier.security.audit import RecordFilter, read_records, verify_chain

EXIT_OK = 0
EXIT_TAMPERED = 1
EXIT_ERROR = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    certs = subparsers.add_parser("certs", help="development certificates for mutual TLS")
    cert_commands = certs.add_subparsers(dest="certs_command", required=True)
    init = cert_commands.add_parser(
        "init", help="a development CA, a server certificate for localhost and one client certificate per role"
    )
    init.add_argument("directory", type=Path)
    init.add_argument("--server-name", action="append", dest="server_names",
                      help="DNS name or IP address of the server (repeatable; default localhost and 127.0.0.1)")
    init.set_defaults(handler=_certs_init)

    audit = subparsers.add_parser("audit", help="check and export the audit trail")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_commands.add_parser("verify", help="check the hash chain; exit 0 intact, 1 tampered")
    verify.add_argument("--path", type=Path, help="the trail (default: VERIFIER_AUDIT__PATH under the data dir)")
    verify.set_defaults(handler=_audit_verify)
    export = audit_commands.add_parser("export", help="records as JSON Lines")
    export.add_argument("output", type=Path, help="file to write, or - for standard output")
    export.add_argument("--path", type=Path, help="the trail (default: VERIFIER_AUDIT__PATH under the data dir)")
    export.add_argument("--since", type=_moment, help="ISO 8601 time, inclusive (UTC if no zone)")
    export.add_argument("--until", type=_moment, help="ISO 8601 time, exclusive")
    export.add_argument("--identity", default="", help="only this caller")
    export.add_argument("--subject", default="", help="only records naming this subject or target id")
    export.add_argument("--outcome", default="", help="only this outcome (OK, STARTED, PERMISSION_DENIED, ...)")
    export.set_defaults(handler=_audit_export)
    begin = audit_commands.add_parser(
        "begin", help="begin a new, empty trail on purpose where none is (server stopped); the reason is its first record")
    begin.add_argument("--reason", required=True,
                       help="why the trail starts afresh (for example: the old one was lost with disk 2, ticket 4711)")
    begin.set_defaults(handler=_audit_begin)


def _moment(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _trail(args: argparse.Namespace, settings: Settings) -> Path:
    return args.path if args.path is not None else settings.audit.file(settings.data_dir)


def _certs_init(args: argparse.Namespace, settings: Settings) -> int:
    from verifier.security.certs import init_dev_ca

    names = tuple(args.server_names) if args.server_names else ("localhost", "127.0.0.1")
    try:
        written = init_dev_ca(args.directory, names)
    except (FileExistsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    for path in written:
        print(path)
    print(f"serve with: VERIFIER_SECURITY__TLS_DIR={args.directory} verifier serve")
    return EXIT_OK


def _audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    try:
        report = verify_chain(_trail(args, settings))
    except (FileNotFoundError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if not report.intact:
        print(f"TAMPERED: record {report.bad_seq}: {report.problem} ({report.count} records intact before it)")
        return EXIT_TAMPERED
    print(f"intact: {report.count} records, head {report.head}")
    return EXIT_OK


def _audit_export(args: argparse.Namespace, settings: Settings) -> int:
    where = RecordFilter(since=args.since, until=args.until, identity=args.identity, subject=args.subject,
                         outcome=args.outcome)
    out: TextIO = sys.stdout if str(args.output) == "-" else args.output.open("w")
    count = 0
    try:
        for record in read_records(_trail(args, settings), where):
            out.write(json.dumps(record.as_json()) + "\n")
            count += 1
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        if out is not sys.stdout:
            out.close()
    print(f"{count} records exported", file=sys.stderr)
    return EXIT_OK


def _audit_begin(args: argparse.Namespace, settings: Settings) -> int:
    """A new trail, begun by an operator who says why: the only way a server
    serves an existing store without its old trail (README, Security)."""
    from verifier.errors import VerifierError
    from verifier.security.audit import CHANGE, AuditLog, Entry, local_operator
    from verifier.validation import stated_reason

    path = settings.audit.file(settings.data_dir)
    try:
        reason = stated_reason(args.reason, "--reason")
    except VerifierError as error:
        print(f"error: {error.message}; say why the trail starts afresh", file=sys.stderr)
        return EXIT_ERROR
    if path.exists():
        print(f"error: {path} exists: a new trail is begun only where there is none", file=sys.stderr)
        return EXIT_ERROR
    identity, role = local_operator()
    audit = AuditLog(path, settings.audit.commit_window_seconds, settings.audit.busy_timeout_seconds)
    try:
        audit.append_change(Entry(identity=identity, role=role, rpc="cli:audit begin", kind=CHANGE, outcome="OK",
                                  targets=(str(path),), decision=f"new audit trail begun: {reason}"))
    finally:
        audit.close()
    print(f"began a new audit trail at {path}: {reason}")
    return EXIT_OK
