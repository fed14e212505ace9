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
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from verifier.errors import Reason, VerifierError
from verifier.pipeline import FaceEngine, Selection
from verifier.templates import Template
from verifier.validation import identifier
from verifier.watchlist.service import check_entry
from verifier.watchlist.store import (
    Subject,
    SubjectEntry,
    WatchlistStore,
    encode_payload,
    subject_record,
    template_of_record,
    template_record,
)

FORMAT = "verifier-bundle-1"


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
        bundle = Bundle(
            issuer=str(content["issuer"]), key_id=str(content["key_id"]), sequence=int(content["sequence"]),
            created_at=float(content["created_at"]), expires_at=float(content["expires_at"]),
            model_id=str(content["model_id"]), watchlist=identifier(str(content["watchlist"]), "watchlist"),
            description=str(content["description"]), subjects=list(content["subjects"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise refused("malformed", "the signed content is not a bundle this program reads") from exc
    if bundle.key_id != claimed or bundle.issuer != trust.issuer:
        raise refused("issuer_mismatch", f"the bundle names issuer {bundle.issuer!r}; its key is "
                      f"{trust.issuer!r}'s", key_id=claimed)
    identifier(bundle.target, "watchlist")
    if bundle.expires_at <= now:
        raise refused("expired", f"the bundle expired at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(bundle.expires_at))}",
                      issuer=bundle.issuer, sequence=bundle.sequence)
    return bundle


def usable_subjects(bundle: Bundle, engine: FaceEngine) -> list[dict]:
    """The bundle's subjects with templates of the served model: its own where
    it has them, else made from its images; a subject with neither refuses the
    whole bundle (a partial list would be a silent no-hit)."""
    spec = engine.template_spec
    usable = []
    for number, record in enumerate(bundle.subjects):
        entry = SubjectEntry(bundle.target, str(record["subject_id"]), str(record["reason"]),
                             str(record["source_agency"]), str(record["external_ref"]))
        check_entry(entry)
        templates: list[Template] = []
        for stored in record.get("templates", []):
            template = template_of_record(stored)
            if template.model_id == spec.model_id:
                template.require(spec)
                templates.append(template)
        if not templates:
            for image in record.get("images", []):
                templates.append(engine.analyse(base64.b64decode(image, validate=True), Selection.LARGEST).template)
        if not templates:
            raise refused("model_unusable", f"subject {entry.subject_id!r} has no template of model {spec.model_id} "
                          f"(the bundle's are {bundle.model_id}) and no image to make one from",
                          subject_id=entry.subject_id, bundle_model=bundle.model_id, model=spec.model_id)
        usable.append({**{k: record[k] for k in ("subject_id", "external_ref", "reason", "source_agency",
                                                   "created_at", "expires_at")},
                       "templates": [template_record(t) for t in templates]})
    return usable


def import_bundle(
    data: bytes, trusted: dict[str, TrustedKey], max_bytes: int, engine: FaceEngine,
    last_sequence: Callable[[str], int | None], replace: Callable[[str, str, dict, list[dict]], object],
) -> tuple[Bundle, int]:
    """Check a bundle and replace the partner's list with it; returns the bundle
    and how many subjects it holds. Any refusal changes nothing."""
    bundle = open_bundle(data, trusted, max_bytes, time.time())
    last = last_sequence(bundle.issuer)
    if last is not None and bundle.sequence <= last:
        raise refused("replayed", f"bundle {bundle.sequence} of {bundle.issuer} is not newer than {last}, the last "
                      "imported: a replay", issuer=bundle.issuer, sequence=bundle.sequence)
    subjects = usable_subjects(bundle, engine)
    replace(bundle.target, bundle.description, bundle.provenance(), subjects)
    return bundle, len(subjects)
