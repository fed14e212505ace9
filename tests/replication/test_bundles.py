"""Signed partner bundles, end to end through real stores and the real model:
an accepted bundle replaces the partner's list atomically and its hits carry
provenance; tampered, unknown-key, expired, replayed and wrong-model bundles
are refused with nothing imported; the CLI refuses and audits the same way."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from tests.processes import cli
from tests.watchlist.samples import local_settings, templates_of, unit_vectors
from verifier.config import Settings
from verifier.errors import Reason, VerifierError
from verifier.pipeline import FaceEngine
from verifier.security.audit import RecordFilter, read_records
from verifier.templates import Template
from verifier.watchlist.bundles import export_bundle, import_bundle, keygen, load_signing_key, trusted_keys
from verifier.watchlist.service import WatchlistService
from verifier.watchlist.store import SubjectEntry, WatchlistStore

DAY = 86400.0


@pytest.fixture()
def partner(tmp_path: Path, engine: FaceEngine) -> WatchlistStore:
    """The partner's own store with one list of three subjects."""
    store = WatchlistStore.create(tmp_path / "partner" / "store.sqlite3", 5.0)
    store.create_watchlist("wanted", "wanted by the partner")
    for i in range(3):
        store.add_subject(SubjectEntry("wanted", f"P{i}", "warrant", "partner police"), templates_of(engine, 1, i))
    return store


@pytest.fixture()
def keys(tmp_path: Path) -> tuple[Path, Path]:
    """(the partner's signing key, our folder of trusted keys holding its public key)."""
    private, public, _ = keygen("ALPHA", tmp_path / "alpha-keys")
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "ALPHA.pub").write_bytes(public.read_bytes())
    return private, trusted


@pytest.fixture()
def ours(settings: Settings, engine: FaceEngine, tmp_path: Path):  # noqa: ANN201 - a service fixture
    service = WatchlistService.open(local_settings(settings, tmp_path / "ours"), engine)
    service.load()
    yield service
    service.close()


def _bundle(partner: WatchlistStore, key: Path, sequence: int, expires_in: float = DAY) -> bytes:
    return export_bundle(partner, "wanted", load_signing_key(key), "ALPHA", sequence, time.time() + expires_in)


def _import(data: bytes, service: WatchlistService, trusted: Path, engine: FaceEngine) -> tuple:
    return import_bundle(data, trusted_keys(trusted), 10**8, engine, service.store.partner_sequence,
                         service.replace_partner_list)


def _refusal(data: bytes, service: WatchlistService, trusted: Path, engine: FaceEngine) -> str:
    before = service.store.position().seq
    with pytest.raises(VerifierError) as refused:
        _import(data, service, trusted, engine)
    assert refused.value.reason is Reason.BUNDLE_REFUSED
    assert service.store.position().seq == before  # nothing imported
    return refused.value.details["cause"]


def test_an_accepted_bundle_replaces_the_list_and_hits_carry_provenance(
    partner: WatchlistStore, keys: tuple[Path, Path], ours: WatchlistService, engine: FaceEngine
) -> None:
    key, trusted = keys
    bundle, count = _import(_bundle(partner, key, 1), ours, trusted, engine)
    assert (bundle.target, count) == ("ALPHA:wanted", 3)
    probe = partner.templates_of(partner.subject("wanted", "P1").row)[0]
    found = ours.identify(probe, ["ALPHA:wanted"])
    assert [c.subject.entry.subject_id for c in found.candidates] == ["P1"]
    provenance = found.provenance["ALPHA:wanted"]
    assert (provenance.issuer, provenance.sequence, provenance.model_id) == ("ALPHA", 1, engine.model_id)
    partner.remove_subject("wanted", "P1")
    partner.add_subject(SubjectEntry("wanted", "P7", "warrant", "partner police"), templates_of(engine, 1, 7))
    _import(_bundle(partner, key, 2), ours, trusted, engine)
    assert sorted(s.entry.subject_id for s in ours.store.subjects("ALPHA:wanted")) == ["P0", "P2", "P7"]
    assert ours.identify(probe, ["ALPHA:wanted"]).candidates == []  # replaced whole: P1 is gone
    assert ours.consistency().agrees


def test_refused_bundles_import_nothing(
    partner: WatchlistStore, keys: tuple[Path, Path], ours: WatchlistService, engine: FaceEngine, tmp_path: Path
) -> None:
    key, trusted = keys
    good = _bundle(partner, key, 5)
    envelope = json.loads(good)
    payload = bytearray(base64.b64decode(envelope["payload"]))
    payload[len(payload) // 2] ^= 0x01
    tampered = json.dumps({**envelope, "payload": base64.b64encode(bytes(payload)).decode()}).encode()
    assert _refusal(tampered, ours, trusted, engine) == "bad_signature"
    flipped = bytearray(good)
    flipped[len(flipped) // 3] ^= 0x04
    assert _refusal(bytes(flipped), ours, trusted, engine) in {"bad_signature", "malformed", "unknown_key"}
    stranger, _, _ = keygen("ALPHA", tmp_path / "stranger")
    assert _refusal(_bundle(partner, stranger, 6), ours, trusted, engine) == "unknown_key"
    assert _refusal(_bundle(partner, key, 7, expires_in=-1.0), ours, trusted, engine) == "expired"
    _import(good, ours, trusted, engine)
    assert _refusal(good, ours, trusted, engine) == "replayed"
    assert _refusal(_bundle(partner, key, 4), ours, trusted, engine) == "replayed"
    other = WatchlistStore.create(tmp_path / "other-model" / "store.sqlite3", 5.0)
    other.create_watchlist("wanted", "")
    vector = unit_vectors(1, 512, seed=3)[0]
    other.add_subject(SubjectEntry("wanted", "Q1", "warrant", "partner"), [Template("arcface-512:0", vector)])
    assert _refusal(_bundle(other, key, 9), ours, trusted, engine) == "model_unusable"
    assert sorted(s.entry.subject_id for s in ours.store.subjects("ALPHA:wanted")) == ["P0", "P1", "P2"]


def test_cli_keygen_export_import_refuse_and_audit(
    partner: WatchlistStore, settings: Settings, tmp_path: Path
) -> None:
    data = tmp_path / "ours-cli"
    assert cli(data, "watchlist", "init").returncode == 0
    made = cli(tmp_path, "bundle", "keygen", "--issuer", "BETA", "-o", str(tmp_path / "beta"))
    assert made.returncode == 0 and (tmp_path / "beta" / "BETA.key").stat().st_mode & 0o077 == 0
    partner.close()
    exported = cli(tmp_path / "partner", "bundle", "export", "--watchlist", "wanted", "--key",
                   str(tmp_path / "beta" / "BETA.key"), "--sequence", "3", "-o", str(tmp_path / "b.json"),
                   env={"VERIFIER_WATCHLIST__STORE_PATH": "store.sqlite3"})
    assert exported.returncode == 0, exported.stderr
    untrusted = cli(data, "bundle", "import", str(tmp_path / "b.json"))
    assert untrusted.returncode == 1 and "unknown_key" in untrusted.stderr
    (tmp_path / "trusted").mkdir()
    (tmp_path / "trusted" / "BETA.pub").write_bytes((tmp_path / "beta" / "BETA.pub").read_bytes())
    env = {"VERIFIER_BUNDLES__TRUSTED_KEYS_DIR": str(tmp_path / "trusted")}
    accepted = cli(data, "bundle", "import", str(tmp_path / "b.json"), env=env)
    assert accepted.returncode == 0 and "3 subjects now in 'BETA:wanted'" in accepted.stdout, accepted.stderr
    replayed = cli(data, "bundle", "import", str(tmp_path / "b.json"), env=env)
    assert replayed.returncode == 1 and "replayed" in replayed.stderr
    records = list(read_records(settings.audit.file(data), RecordFilter()))
    assert [r.outcome for r in records if r.rpc == "cli:bundle import"] == [
        "STARTED", "FAILED", "STARTED", "OK", "STARTED", "FAILED"]
