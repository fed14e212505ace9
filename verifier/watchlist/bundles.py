"""Signed partner bundles: a partner's watch-list, signed with Ed25519, that
replaces that partner's list here as a whole.

A bundle file is JSON: ``format``, ``key_id`` (which key to check with),
``payload`` (base64 of canonical JSON: provenance, the list's name and
description, and its subjects with templates, and images where the partner
has them) and ``signature`` (Ed25519 over the payload bytes exactly). The
signature is checked before anything in the payload is read, so an altered
byte anywhere is refused as a bad signature.

Trust: the partner keys configured (``bundles.trusted_keys_dir``), one public
key per file named after its issuing agency; a key vouches only for bundles of
its own agency. An import is refused (nothing changed, the cause named) when
the key is unknown, the signature fails, the bundle names another issuer than
its key's, it has expired, its sequence is not newer than the last accepted
from that issuer (a replay), or a subject has no template of the served model
and no image to make one from. Accepted, the bundle replaces the list
``<issuer>:<list>`` in one transaction (a change on the feed, so replicas get
it whole), and hits on it carry its provenance.

A signature says who sent the content, not that it is sound: every signed
field is checked as a local enrolment's is (ids from the safe alphabet, text
of at most 1 KiB without control characters, times finite and within what a
timestamp holds, sequence within what the store holds, templates of the
served model sound and of its dimension, at most
``watchlist.max_templates_per_subject`` of them and of images per subject,
images within the enrolment limits, each subject id once). One bad field
refuses the whole bundle (cause ``field_invalid``), naming it:
``subjects[3].expires_at``. A new partner list counts against
``watchlist.max_watchlists``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from verifier.config import WatchlistSettings
from verifier.errors import Reason, VerifierError
from verifier.imaging import ImageUse
from verifier.pipeline import FaceEngine, Selection
from verifier.templates import Template, TemplateSpec
from verifier.validation import epoch_seconds, identifier, moment, text
from verifier.watchlist.service import check_entry
from verifier.storage.feed import encode_payload
from verifier.watchlist.changes import subject_record, template_record
from verifier.watchlist.store import Subject, SubjectEntry, WatchlistStore

FORMAT = "verifier-bundle-1"
# The largest sequence number the store holds (SQLite INTEGER).
MAX_SEQUENCE = 2**63 - 1
MAX_TEMPLATES_PER_SUBJECT = WatchlistSettings().max_templates_per_subject


def refused(cause: str, message: str, **details: object) -> VerifierError:
    return VerifierError(Reason.BUNDLE_REFUSED, message, cause=cause, **details)


def key_id(public: Ed25519PublicKey) -> str:
    """The first 16 bytes of the SHA-256 of the raw public key, in hex."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:32]


def keygen(issuer: str, folder: Path) -> tuple[Path, Path, str]:
    """A new key pair for ``issuer``: ``<issuer>.key`` (owner-only) to sign with,
    ``<issuer>.pub`` to hand to partners; and its key id."""
    identifier(issuer, "issuer")
    folder.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    key_path, pub_path = folder / f"{issuer}.key", folder / f"{issuer}.pub"
    if key_path.exists():
        raise FileExistsError(f"{key_path} exists; a signing key is never overwritten")
    with os.fdopen(os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
        out.write(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    pub_path.write_bytes(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo))
    return key_path, pub_path, key_id(private.public_key())


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


@dataclass(frozen=True)
class TrustedKey:
    issuer: str
    key: Ed25519PublicKey


def trusted_keys(folder: Path | None) -> dict[str, TrustedKey]:
    """Key id to trusted key, from ``<issuer>[.<anything>].pub`` files in ``folder``."""
    if folder is None or not folder.is_dir():
        return {}
    found = {}
    for path in sorted(folder.glob("*.pub")):
        key = serialization.load_pem_public_key(path.read_bytes())
        if isinstance(key, Ed25519PublicKey):
            found[key_id(key)] = TrustedKey(path.name.split(".", 1)[0], key)
    return found


def export_bundle(
    store: WatchlistStore, watchlist: str, signing: Ed25519PrivateKey, issuer: str, sequence: int,
    expires_at: float, now: float | None = None,
) -> bytes:
    """The signed bundle of one of our watch-lists, as file bytes."""
    identifier(issuer, "issuer")
    listed = store.watchlist(watchlist)
    subjects: list[Subject] = list(store.subjects(watchlist))
    records = []
    models: set[str] = set()
    for subject in subjects:
        templates = store.templates_of(subject.row)
        models.update(t.model_id for t in templates)
        records.append({**subject_record(subject.entry, subject.created_at.timestamp(), templates), "images": []})
    created = time.time() if now is None else now
    payload = encode_payload({
        "issuer": issuer, "key_id": key_id(signing.public_key()), "sequence": sequence, "created_at": created,
        "expires_at": expires_at, "model_id": ",".join(sorted(models)), "watchlist": watchlist,
        "description": listed.description, "subjects": records,
    })
    return json.dumps({
        "format": FORMAT, "key_id": key_id(signing.public_key()),
        "payload": base64.b64encode(payload).decode(), "signature": base64.b64encode(signing.sign(payload)).decode(),
    }).encode()


@dataclass(frozen=True)
class Bundle:
    """A bundle whose signature, key, issuer and expiry have been checked."""

    issuer: str
    key_id: str
    sequence: int
    created_at: float
    expires_at: float
    model_id: str
    watchlist: str
    description: str
    subjects: list[dict]

    @property
    def target(self) -> str:
        """The list it replaces here: the partner's name for it, under the issuer's."""
        return f"{self.issuer}:{self.watchlist}"

    def provenance(self) -> dict:
        return {"issuer": self.issuer, "key_id": self.key_id, "sequence": self.sequence,
                "created_at": self.created_at, "expires_at": self.expires_at, "model_id": self.model_id}


def open_bundle(data: bytes, trusted: dict[str, TrustedKey], max_bytes: int, now: float) -> Bundle:
    """Check a bundle's envelope, key, signature, issuer and expiry; read nothing unsigned."""
    if len(data) > max_bytes:
        raise refused("too_large", f"the bundle is {len(data)} bytes; at most {max_bytes} are accepted")
    try:
        envelope = json.loads(data)
        payload = base64.b64decode(envelope["payload"], validate=True)
        signature = base64.b64decode(envelope["signature"], validate=True)
        claimed = str(envelope["key_id"])
        if envelope["format"] != FORMAT:
            raise ValueError(envelope["format"])
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise refused("malformed", "not a bundle this program reads (or altered on the way)") from exc
    trust = trusted.get(claimed)
    if trust is None:
        raise refused("unknown_key", f"the bundle is signed with key {claimed[:32]!r}, which is not a trusted partner "
                      "key", key_id=claimed[:32])
    try:
        trust.key.verify(signature, payload)
    except InvalidSignature as exc:
        raise refused("bad_signature", "the bundle's signature does not verify: altered, or not signed by that key",
                      key_id=claimed) from exc
    try:
        content = json.loads(payload)
    except ValueError as exc:
        raise refused("malformed", "the signed content is not a bundle this program reads") from exc
    if not isinstance(content, dict):
        raise refused("malformed", "the signed content is not a bundle this program reads")
    bundle = _checked_bundle(content)
    if bundle.key_id != claimed or bundle.issuer != trust.issuer:
        raise refused("issuer_mismatch", f"the bundle names issuer {bundle.issuer!r}; its key is "
                      f"{trust.issuer!r}'s", key_id=claimed)
    with _naming_the_field():
        identifier(bundle.target, "watchlist")
    if bundle.expires_at <= now:
        raise refused("expired", f"the bundle expired at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(bundle.expires_at))}",
                      issuer=bundle.issuer, sequence=bundle.sequence)
    return bundle


def _invalid(field: str, message: str, **details: object) -> VerifierError:
    return refused("field_invalid", f"{field}: {message}; nothing was imported", field=field, **details)


@contextmanager
def _naming_the_field() -> Iterator[None]:
    """Turns a validator's refusal (FIELD_INVALID naming the field) into the
    bundle's refusal naming the same field."""
    try:
        yield
    except VerifierError as error:
        if error.reason is Reason.BUNDLE_REFUSED:
            raise
        field = str(error.details.get("field", ""))
        message = error.message.removeprefix(f"{field}: ") if field else error.message
        raise _invalid(field or "bundle", message, refused_as=error.reason.value) from error


def _get(record: dict, key: str, kind: type | tuple[type, ...], field: str, default: object = ...) -> object:
    """``record[key]`` if it is of ``kind`` (never a bool for a number); absent, ``default`` or a refusal."""
    if key not in record:
        if default is ...:
            raise _invalid(field, "is required")
        return default
    value, kinds = record[key], kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise _invalid(field, f"is {type(value).__name__}, not {' or '.join(k.__name__ for k in kinds)}")
    return value


def _str(record: dict, key: str, field: str, default: str | None = None) -> str:
    return cast(str, _get(record, key, str, field, ... if default is None else default))


def _list(record: dict, key: str, field: str, optional: bool = True) -> list:
    return cast(list, _get(record, key, list, field, [] if optional else ...))


def _time(record: dict, key: str, field: str, optional: bool = False) -> float | None:
    value = _get(record, key, (int, float, type(None)) if optional else (int, float), field,
                 None if optional else ...)
    if value is None:
        return None
    with _naming_the_field():
        return epoch_seconds(value, field)


def _checked_bundle(content: dict) -> Bundle:
    """The signed content's own fields, each checked as a local request's would be."""
    with _naming_the_field():
        issuer = identifier(_str(content, "issuer", "issuer"), "issuer")
        model_id = text(_str(content, "model_id", "model_id"), "model_id")
        watchlist = identifier(_str(content, "watchlist", "watchlist"), "watchlist")
        description = text(_str(content, "description", "description", ""), "description")
    sequence = cast(int, _get(content, "sequence", int, "sequence"))
    if not 0 <= sequence <= MAX_SEQUENCE:
        raise _invalid("sequence", f"{sequence} is outside 0 to {MAX_SEQUENCE}")
    created_at = cast(float, _time(content, "created_at", "created_at"))
    expires_at = cast(float, _time(content, "expires_at", "expires_at"))
    return Bundle(issuer=issuer, key_id=_str(content, "key_id", "key_id"), sequence=sequence, created_at=created_at,
                  expires_at=expires_at, model_id=model_id, watchlist=watchlist, description=description,
                  subjects=_list(content, "subjects", "subjects", optional=False))


def _decoded(value: object, field: str) -> bytes:
    if not isinstance(value, str):
        raise _invalid(field, f"is {type(value).__name__}, not base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _invalid(field, "is not base64") from exc


def _checked_templates(record: dict, where: str, spec: TemplateSpec) -> list[Template]:
    """The subject's templates of the served model; every template must be sound
    (those of other models are not stored, but they too must be well formed)."""
    served: list[Template] = []
    for number, stored in enumerate(_list(record, "templates", f"{where}.templates")):
        field = f"{where}.templates[{number}]"
        if not isinstance(stored, dict):
            raise _invalid(field, f"is {type(stored).__name__}, not a template")
        model_id = _str(stored, "model_id", f"{field}.model_id")
        version = cast(int, _get(stored, "version", int, f"{field}.version"))
        data = _decoded(stored.get("vector"), f"{field}.vector")
        if len(data) % 4:
            raise _invalid(f"{field}.vector", f"{len(data)} bytes are not whole float32 values")
        try:
            template = Template.from_parts(model_id, version, len(data) // 4, data)
            if template.model_id == spec.model_id:
                template.require(spec)
                served.append(template)
        except VerifierError as error:
            raise _invalid(field, error.message, refused_as=error.reason.value) from error
    return served


def _checked_subject(
    number: int, record: object, bundle: Bundle, engine: FaceEngine, max_templates: int
) -> dict:
    """One subject record checked as a local enrolment is, with templates of the
    served model (its own, else made from its images); refuses naming the field."""
    where = f"subjects[{number}]"
    if not isinstance(record, dict):
        raise _invalid(where, f"is {type(record).__name__}, not a subject")
    listed = _str(record, "watchlist", f"{where}.watchlist", bundle.watchlist)
    if listed != bundle.watchlist:
        raise _invalid(f"{where}.watchlist", f"{listed!r} is not the bundle's list {bundle.watchlist!r}")
    created_at = _time(record, "created_at", f"{where}.created_at")
    expires_at = _time(record, "expires_at", f"{where}.expires_at", optional=True)
    entry = SubjectEntry(
        bundle.target, _str(record, "subject_id", f"{where}.subject_id"), _str(record, "reason", f"{where}.reason", ""),
        _str(record, "source_agency", f"{where}.source_agency", ""),
        _str(record, "external_ref", f"{where}.external_ref", ""), None if expires_at is None else moment(expires_at),
    )
    with _naming_the_field():
        check_entry(entry, where, "external_ref")
    spec = engine.template_spec
    templates = _checked_templates(record, where, spec)
    images = [_decoded(image, f"{where}.images[{i}]")
              for i, image in enumerate(_list(record, "images", f"{where}.images"))]
    for field, count in ((f"{where}.templates", len(templates)), (f"{where}.images", len(images))):
        if count > max_templates:
            raise _invalid(field, f"{count} (of the served model), at most {max_templates} per subject "
                           "(watchlist.max_templates_per_subject)")
    if not templates:
        for i, image in enumerate(images):
            try:
                templates.append(engine.analyse(image, Selection.LARGEST, ImageUse.ENROLMENT).template)
            except VerifierError as error:
                raise _invalid(f"{where}.images[{i}]", error.message, refused_as=error.reason.value) from error
    if not templates:
        raise refused("model_unusable", f"subject {entry.subject_id!r} has no template of model {spec.model_id} "
                      f"(the bundle's are {bundle.model_id}) and no image to make one from",
                      field=where, subject_id=entry.subject_id, bundle_model=bundle.model_id, model=spec.model_id)
    return {"subject_id": entry.subject_id, "external_ref": entry.external_ref, "reason": entry.reason,
            "source_agency": entry.source_agency, "created_at": created_at, "expires_at": expires_at,
            "templates": [template_record(t) for t in templates]}


def usable_subjects(bundle: Bundle, engine: FaceEngine, max_templates: int = MAX_TEMPLATES_PER_SUBJECT) -> list[dict]:
    """The bundle's subjects, each checked as a local enrolment is, with
    templates of the served model: its own where it has them, else made from
    its images. Any bad subject, or one with neither, refuses the whole bundle
    (a partial list would be a silent no-hit)."""
    usable, seen = [], {}
    for number, record in enumerate(bundle.subjects):
        subject = _checked_subject(number, record, bundle, engine, max_templates)
        first = seen.setdefault(subject["subject_id"], number)
        if first != number:
            raise _invalid(f"subjects[{number}].subject_id", f"{subject['subject_id']!r} is listed twice (first as "
                           f"subjects[{first}])")
        usable.append(subject)
    return usable


def import_bundle(
    data: bytes, trusted: dict[str, TrustedKey], max_bytes: int, engine: FaceEngine,
    last_sequence: Callable[[str], int | None], replace: Callable[[str, str, dict, list[dict]], object],
    max_templates: int = MAX_TEMPLATES_PER_SUBJECT,
) -> tuple[Bundle, int]:
    """Check a bundle and replace the partner's list with it; returns the bundle
    and how many subjects it holds. Any refusal changes nothing."""
    bundle = open_bundle(data, trusted, max_bytes, time.time())
    last = last_sequence(bundle.issuer)
    if last is not None and bundle.sequence <= last:
        raise refused("replayed", f"bundle {bundle.sequence} of {bundle.issuer} is not newer than {last}, the last "
                      "imported: a replay", issuer=bundle.issuer, sequence=bundle.sequence)
    subjects = usable_subjects(bundle, engine, max_templates)
    replace(bundle.target, bundle.description, bundle.provenance(), subjects)
    return bundle, len(subjects)
