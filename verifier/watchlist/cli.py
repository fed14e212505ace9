"""`verifier watchlist init|import|migrate|export|stats`: create the store, load a
watch-list from photos, move it to a new model, hand it on, look at it.

``init`` is the only way a store comes to exist (the server never creates one,
so a store that disappears is noticed rather than silently replaced by an
empty one), and it too refuses where there is evidence that a store existed
(:mod:`verifier.watchlist.evidence`), until the store is restored from backup
or begun afresh on purpose (``--start-afresh --reason``, on the audit trail).

Import writes to the store itself, so it runs while the server is stopped (the
store admits one writing process); it is resumable: subjects already enrolled
in the watch-list are skipped, so a run that was interrupted, or that failed on
some subjects, is simply run again. Migrate (after a change of model pack)
makes each subject's templates again from its stored images; it too writes
the store with the server stopped, and is resumed by running it again. Both
are on the audit trail as the local operator, one record pair per subject.
Export and stats only read, and run beside a serving process.
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial as partial_call
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, TypeVar

from tqdm import tqdm

from verifier.config import Settings
from verifier.errors import VerifierError
from verifier.watchlist.index import snapshot_tag
from verifier.storage.faults import StoreError
from verifier.watchlist.store import Subject, SubjectEntry, WatchlistStore

if TYPE_CHECKING:
    from verifier.security.audit import AuditLog

T = TypeVar("T")
EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_ERROR = 2
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".jp2", ".j2k", ".pgm", ".bmp"})
# Failures listed one by one at the end of an import; the rest are counted.
FAILURES_LISTED = 20
CSV_COLUMNS = ("subject_id", "image")


@dataclass
class Planned:
    """One subject to enrol: its images and what the source says about it."""

    subject_id: str
    images: list[Path] = field(default_factory=list)
    reason: str = ""
    source_agency: str = ""
    external_ref: str = ""
    expires_at: datetime | None = None


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("watchlist", help="import, export and inspect watch-lists")
    commands = parser.add_subparsers(dest="watchlist_command", required=True)

    init = commands.add_parser(
        "init", help="create the (empty) watch-list store; refuses if one exists or there is evidence that one did")
    how = init.add_mutually_exclusive_group()
    how.add_argument(
        "--first-run", action="store_true",
        help="what `make run` does: nothing if the store exists, a new store if none ever did, and a refusal "
             "(exit 2) if one existed and is gone",
    )
    how.add_argument(
        "--start-afresh", action="store_true",
        help="a new, empty store where one existed and is gone, on purpose (needs --reason; on the audit trail)",
    )
    init.add_argument("--reason", default="", help="why the store starts afresh (for example: ticket 4711)")
    init.set_defaults(handler=_init)

    load = commands.add_parser(
        "import", help="enrol subjects from <subject>/<image> folders or a CSV (server stopped; resumable)"
    )
    load.add_argument("source", type=Path, help="a folder of <subject>/<image> files, or a CSV file")
    load.add_argument("--watchlist", required=True, help="the watch-list to enrol into (created if absent)")
    load.add_argument("--description", default="", help="description of a watch-list created by this import")
    load.add_argument("--reason", default="", help="why the subjects are listed (a CSV column overrides it)")
    load.add_argument("--source-agency", default="", help="the agency listing them (a CSV column overrides it)")
    load.add_argument("--allow-partial", action="store_true", help="enrol from the images that have a face")
    load.set_defaults(handler=_import)

    migrate = commands.add_parser(
        "migrate", help="re-extract templates of the configured model pack from stored images (server stopped; "
                        "resumable)",
    )
    migrate.add_argument("--watchlist", help="only this watch-list (default: all)")
    migrate.set_defaults(handler=_migrate)

    export = commands.add_parser("export", help="subjects and their templates as JSON Lines")
    export.add_argument("output", type=Path, help="file to write, or - for standard output")
    export.add_argument("--watchlist", help="only this watch-list")
    export.set_defaults(handler=_export)

    stats = commands.add_parser("stats", help="watch-lists, subjects, templates, models, and the saved index")
    stats.set_defaults(handler=_stats)


def _init(args: argparse.Namespace, settings: Settings) -> int:
    from verifier.watchlist.evidence import evidence, refusal

    store = settings.watchlist.store_file(settings.data_dir)
    if store.exists():
        if args.first_run:
            _remember_existing(settings, store)
            print(f"{store} exists: not a first run, no store created")
            return EXIT_OK
        # Before the trail is touched: a refused init must not begin a trail
        # beside a store whose own trail was lost (README, Security).
        print(f"error: {store} exists; a store is created once", file=sys.stderr)
        return EXIT_ERROR
    reason = ""
    if args.start_afresh or args.reason:
        reason = _reason(args)
        if reason is None:
            return EXIT_ERROR
    found = evidence(settings)
    if found and not args.start_afresh:
        print(refusal(settings, found), file=sys.stderr)
        return EXIT_ERROR
    try:
        path = _created_on_the_trail(settings, store, reason, found)
    except (StoreError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"created an empty watch-list store at {path}" + (f", afresh on purpose: {reason}" if reason else ""))
    return EXIT_OK


def _reason(args: argparse.Namespace) -> str | None:
    """The operator's reason for starting afresh, checked; None (said why) if unusable."""
    from verifier.validation import stated_reason

    if not args.start_afresh:
        print("error: --reason goes with --start-afresh", file=sys.stderr)
        return None
    try:
        return stated_reason(args.reason, "--reason")
    except VerifierError as error:
        print(f"error: {error.message}; say why the store starts afresh", file=sys.stderr)
        return None


def _remember_existing(settings: Settings, store: Path) -> None:
    """A store found at a first run (made before markers were kept, or restored)
    is remembered, so that losing it later is noticed; one that cannot be read
    is left to the server to report."""
    from verifier.watchlist.evidence import recalled, remember

    try:
        found = WatchlistStore.open_readonly(store, settings.watchlist.busy_timeout_seconds)
    except StoreError:
        return
    try:
        store_id = found.store_id
    finally:
        found.close()
    marker = recalled(settings)
    if marker is None or marker.store_id != store_id:
        print(f"remembered store {store_id} in {remember(settings, store_id)}")


def _created_on_the_trail(
    settings: Settings, store: Path, reason: str = "", overridden: list[str] | None = None
) -> Path:
    """Create the store, recorded on the audit trail (begun here on a first run),
    so that a store never exists without the trail the server requires beside
    it, and remember it outside its folder. A store begun afresh on purpose is
    always recorded, with the operator's reason and the evidence it overrode."""
    from verifier.security.audit import CHANGE, AuditLog, Entry, local_operator, recorded_change
    from verifier.watchlist.evidence import remember, set_aside_leftovers
    from verifier.watchlist.service import initialise_store

    def create() -> Path:
        if reason:
            for aside in set_aside_leftovers(store):
                print(f"set aside {aside} (left by the store that was)")
        path = initialise_store(settings)
        made = WatchlistStore.open_readonly(path, settings.watchlist.busy_timeout_seconds)
        try:
            remember(settings, made.store_id)
        finally:
            made.close()
        return path

    if not settings.audit.enabled and not reason:
        return create()
    audit = AuditLog.for_settings(settings)
    try:
        if not reason:
            return _audited(audit, "init", "CreateStore", str(store), create)
        identity, role = local_operator()
        decision = f"a new, empty store begun afresh on purpose: {reason}"
        if overridden:
            decision += "; evidence of the store it replaces: " + "; ".join(overridden)
        entry = Entry(identity=identity, role=role, rpc="cli:watchlist init/StartAfresh", kind=CHANGE, outcome="",
                      targets=(str(store),), decision=decision)
        return recorded_change(audit, entry, create)
    finally:
        audit.close()


def _expiry(text: str) -> datetime | None:
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _plan_folders(root: Path, args: argparse.Namespace) -> list[Planned]:
    planned = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        planned.append(Planned(folder.name, images, args.reason, args.source_agency))
    return planned


def _plan_csv(path: Path, args: argparse.Namespace) -> list[Planned]:
    """Rows of ``subject_id,image[,reason,source_agency,external_ref,expires]``; image
    paths are relative to the CSV's folder; a subject's first row gives its details."""
    planned: dict[str, Planned] = {}
    with path.open(newline="") as source:
        reader = csv.DictReader(source)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} lacks the column(s) {', '.join(missing)}")
        for row in reader:
            sid = row["subject_id"].strip()
            if sid not in planned:
                planned[sid] = Planned(
                    sid, [], row.get("reason") or args.reason, row.get("source_agency") or args.source_agency,
                    row.get("external_ref") or "", _expiry(row.get("expires") or ""),
                )
            planned[sid].images.append(path.parent / row["image"].strip())
    return list(planned.values())


def _import(args: argparse.Namespace, settings: Settings) -> int:
    from verifier.pipeline import FaceEngine
    from verifier.security.audit import AuditLog
    from verifier.watchlist.service import WatchlistService

    try:
        plan = _plan_csv(args.source, args) if args.source.is_file() else _plan_folders(args.source, args)
    except (OSError, ValueError) as exc:
        print(f"error: cannot read {args.source}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    try:
        service = WatchlistService.open(settings, FaceEngine.from_settings(settings))
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    audit = AuditLog.for_settings(settings)
    failures: list[tuple[str, str, str]] = []
    partial: list[tuple[str, int, int]] = []
    enrolled = 0
    limit = settings.watchlist.max_templates_per_subject
    try:
        service.load()
        if args.watchlist not in {w.name for w in service.watchlists()}:
            _audited(audit, "import", "CreateWatchlist", args.watchlist,
                     lambda: service.create_watchlist(args.watchlist, args.description))
        done = {s.entry.subject_id for s in service.store.subjects(args.watchlist)}
        todo = [p for p in plan if p.subject_id not in done]
        for item in tqdm(todo, desc=f"enrolling into {args.watchlist}", unit="subject"):
            try:
                samples: list[bytes] = [path.read_bytes() for path in item.images[:limit]]
            except OSError as exc:
                failures.append((item.subject_id, "UNREADABLE", f"{exc.filename}: {exc.strerror}"))
                continue
            entry = SubjectEntry(args.watchlist, item.subject_id, item.reason, item.source_agency,
                                 item.external_ref, item.expires_at)
            try:
                result = _audited(audit, "import", "EnrollSubject", f"{args.watchlist}/{item.subject_id}",
                                  lambda: service.enrol(entry, samples, args.allow_partial))
            except VerifierError as error:
                which = error.details.get("sample")
                where = str(item.images[int(which)]) if which is not None else ""
                failures.append((item.subject_id, error.reason.value, f"{error.message} {where}".strip()))
                continue
            enrolled += 1
            if result.subject.template_count < len(item.images):
                partial.append((item.subject_id, result.subject.template_count, len(item.images)))
    finally:
        service.close()
        audit.close()
    _summarise(len(plan), len(plan) - len(todo), enrolled, failures, partial, limit)
    return EXIT_SOME_FAILED if failures else EXIT_OK


def _audited(audit: "AuditLog", command: str, action: str, target: str, apply: Callable[[], T]) -> T:
    """One change of an offline command on the audit trail, as the local operator:
    one record pair per subject (as EnrollSubject over gRPC has), so the trail
    is searched by subject alike whichever way a person was listed or changed."""
    from verifier.security.audit import CHANGE, Entry, local_operator, recorded_change

    identity, role = local_operator()
    entry = Entry(identity=identity, role=role, rpc=f"cli:watchlist {command}/{action}", kind=CHANGE, outcome="",
                  targets=(target,))
    return recorded_change(audit, entry, apply)


def _summarise(
    planned: int, skipped: int, enrolled: int, failures: list[tuple[str, str, str]],
    partial: list[tuple[str, int, int]], limit: int,
) -> None:
    print(f"{planned} subjects in the source: {enrolled} enrolled, {skipped} already enrolled (skipped), "
          f"{len(failures)} failed")
    if partial:
        print(f"{len(partial)} enrolled from fewer images than given (no face, unreadable, or over {limit} per "
              f"subject), e.g. {', '.join(f'{s} {n}/{m}' for s, n, m in partial[:5])}")
    if failures:
        counts = Counter(reason for _, reason, _ in failures)
        print("failures by reason: " + ", ".join(f"{reason} {n}" for reason, n in counts.most_common()))
        for sid, reason, detail in failures[:FAILURES_LISTED]:
            print(f"  {sid}: {reason}: {detail}")
        if len(failures) > FAILURES_LISTED:
            print(f"  ... and {len(failures) - FAILURES_LISTED} more; run again to retry them")


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from verifier.pipeline import FaceEngine
    from verifier.security.audit import AuditLog
    from verifier.watchlist.migration import migrate_subject, plan

    config = settings.watchlist
    try:
        store = WatchlistStore.open(config.store_file(settings.data_dir), config.busy_timeout_seconds)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    audit = AuditLog.for_settings(settings)
    failures: list[tuple[str, str, str]] = []
    partial: list[tuple[str, int, int]] = []
    migrated = 0
    try:
        engine = FaceEngine.from_settings(settings)
        todo = plan(store, engine.model_id, args.watchlist)
        for subject in tqdm(todo.migratable, desc=f"migrating to {engine.model_id}", unit="subject"):
            name = f"{subject.entry.watchlist}/{subject.entry.subject_id}"
            try:
                done = _audited(audit, "migrate", "MigrateSubject", name,
                                partial_call(migrate_subject, store, engine, subject))
            except VerifierError as error:
                failures.append((name, error.reason.value, error.message))
                continue
            migrated += 1
            if done.templates < done.images:
                partial.append((name, done.templates, done.images))
    finally:
        store.close()
        audit.close()
    print(f"model {todo.model_id}: {todo.current} subjects already have its templates (skipped), {migrated} migrated "
          f"from their stored images (old templates replaced), {len(failures)} failed, "
          f"{len(todo.without_images)} cannot be migrated (enrolled without images)")
    if partial:
        print(f"{len(partial)} migrated from fewer images than stored (no face under this model), "
              f"e.g. {', '.join(f'{s} {n}/{m}' for s, n, m in partial[:5])}")
    if todo.without_images:
        print("not migratable, re-enrol or remove (their lists are refused until then):")
        for subject in todo.without_images[:FAILURES_LISTED]:
            print(f"  {subject.entry.watchlist}/{subject.entry.subject_id}: templates of "
                  f"{', '.join(subject.model_ids) or 'no model'}, no images")
        if len(todo.without_images) > FAILURES_LISTED:
            print(f"  ... and {len(todo.without_images) - FAILURES_LISTED} more")
    if failures:
        counts = Counter(reason for _, reason, _ in failures)
        print("failures by reason: " + ", ".join(f"{reason} {n}" for reason, n in counts.most_common()))
        for name, reason, detail in failures[:FAILURES_LISTED]:
            print(f"  {name}: {reason}: {detail}")
        if len(failures) > FAILURES_LISTED:
            print(f"  ... and {len(failures) - FAILURES_LISTED} more; run again to retry them")
    return EXIT_SOME_FAILED if failures or todo.without_images else EXIT_OK


@contextmanager
def readonly_store(settings: Settings) -> Iterator[WatchlistStore]:
    """The store opened for reading (the server may be running), closed after;
    a store that cannot be opened ends the command with a clear message."""
    config = settings.watchlist
    try:
        store = WatchlistStore.open_readonly(config.store_file(settings.data_dir), config.busy_timeout_seconds)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_ERROR) from exc
    try:
        yield store
    finally:
        store.close()


def _subject_record(subject: Subject, store: WatchlistStore) -> dict[str, object]:
    entry = subject.entry
    return {
        "watchlist": entry.watchlist,
        "subject_id": entry.subject_id,
        "external_ref": entry.external_ref,
        "reason": entry.reason,
        "source_agency": entry.source_agency,
        "created": subject.created_at.isoformat(),
        "expires": entry.expires_at.isoformat() if entry.expires_at else None,
        "templates": [
            {"model_id": t.model_id, "version": t.version, "dimension": t.dimension,
             "vector": base64.b64encode(t.to_bytes()).decode()}
            for t in store.templates_of(subject.row)
        ],
    }


def _export(args: argparse.Namespace, settings: Settings) -> int:
    with readonly_store(settings) as store:
        subjects = list(store.subjects(args.watchlist))
        out: TextIO = sys.stdout if str(args.output) == "-" else args.output.open("w")
        try:
            for subject in tqdm(subjects, desc="exporting", unit="subject", file=sys.stderr):
                out.write(json.dumps(_subject_record(subject, store)) + "\n")
        finally:
            if out is not sys.stdout:
                out.close()
    print(f"{len(subjects)} subjects exported", file=sys.stderr)
    return EXIT_OK


def _stats(args: argparse.Namespace, settings: Settings) -> int:
    with readonly_store(settings) as store:
        now = time.time()
        expired = Counter(s.entry.watchlist for s in store.subjects() if s.expired(now))
        print(f"store {store.path} ({store.path.stat().st_size / 1e6:.1f} MB), change {store.change_seq()}")
        print(f"{'watch-list':24s} {'subjects':>9s} {'expired':>8s} {'templates':>10s}  description")
        for w in store.watchlists():
            print(f"{w.name:24s} {w.subjects:9d} {expired[w.name]:8d} {w.templates:10d}  {w.description}")
        for model, count in sorted(store.template_models().items()):
            print(f"templates of {model}: {count}")
        _print_times_out_of_range(store)
        _print_quarantine(settings, store)
        _print_unmigrated(settings, store)
        print(_snapshot_state(settings, store))
    return EXIT_OK


def _print_times_out_of_range(store: WatchlistStore) -> None:
    """Stored times no timestamp can hold (an older store, a damaged disk): read
    and answered as the nearer end of the range (9999-12-31 for one that is not
    a number, so a subject stays listed); listed here to be put right."""
    from verifier.validation import MAX_EPOCH_SECONDS, MIN_EPOCH_SECONDS

    bad = ("NOT (typeof({0}) IN ('integer', 'real') AND {0} >= :low AND {0} < :high)")
    queries = (
        ("subject", "SELECT watchlist || '/' || subject_id, created_at, expires_at FROM subjects WHERE "
                    f"{bad.format('created_at')} OR (expires_at IS NOT NULL AND {bad.format('expires_at')})"),
        ("watch-list", f"SELECT name, created_at, NULL FROM watchlists WHERE {bad.format('created_at')}"),
        ("partner list", "SELECT watchlist, created_at, expires_at FROM partner_lists WHERE "
                         f"{bad.format('created_at')} OR {bad.format('expires_at')}"),
    )
    limits = {"low": MIN_EPOCH_SECONDS, "high": MAX_EPOCH_SECONDS + 1}
    found = []
    with store.reading() as conn:
        for kind, sql in queries:
            found += [(kind, *row) for row in conn.execute(sql, limits).fetchall()]
    if not found:
        return
    print(f"TIMES OUT OF RANGE: {len(found)} records hold a time no timestamp can hold (shown as 0001-01-01 or "
          "9999-12-31; re-enrol the subject or re-import the partner's bundle):")
    for kind, name, created, expires in found[:FAILURES_LISTED]:
        print(f"  {kind} {name}: created {str(created)[:40]}, expires {str(expires)[:40]}")
    if len(found) > FAILURES_LISTED:
        print(f"  ... and {len(found) - FAILURES_LISTED} more")


def _print_quarantine(settings: Settings, store: WatchlistStore) -> None:
    """Stored templates of the configured pack's model that fail the template checks."""
    from verifier.modelzoo.manifest import load_manifest

    manifest = load_manifest(settings.models.manifest)
    spec = manifest.template_spec(settings.models.pack)
    bad = store.quarantined(spec)
    print(f"quarantined templates of {spec.model_id}: {len(bad)} (never searched; re-enrol these subjects)")
    for found in bad[:FAILURES_LISTED]:
        print(f"  {found.watchlist}/{found.subject_id} template {found.position}: {found.reason}: {found.detail}")
    if len(bad) > FAILURES_LISTED:
        print(f"  ... and {len(bad) - FAILURES_LISTED} more")


def _print_unmigrated(settings: Settings, store: WatchlistStore) -> None:
    """Watch-lists the server refuses to search (WATCHLIST_NEEDS_MIGRATION) with the configured pack."""
    from verifier.modelzoo.manifest import load_manifest

    model_id = load_manifest(settings.models.manifest).template_spec(settings.models.pack).model_id
    for need in store.unmigrated(model_id).values():
        bare = len(need.without_images)
        print(f"NEEDS MIGRATION {need.watchlist}: {len(need.rows)} subjects without templates of {model_id} "
              f"({len(need.rows) - bare} migratable with `verifier watchlist migrate`, {bare} without images: "
              "re-enrol or remove); refused for identification until then")


def _snapshot_state(settings: Settings, store: WatchlistStore) -> str:
    path = settings.watchlist.snapshot_file(settings.data_dir)
    tag = snapshot_tag(path) if path is not None else None
    if tag is None:
        return "saved index: none (the next start rebuilds it from the store)"
    if tag.store_id == store.store_id and tag.change_seq == store.change_seq():
        return f"saved index: current (change {tag.change_seq}, {tag.model_id})"
    return f"saved index: stale (change {tag.change_seq}; the next start rebuilds it from the store)"
