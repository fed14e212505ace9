"""Partner bundles are checked field by field, over a real server's socket: a
signed bundle with one bad subject (a time no timestamp holds, a bad id,
control characters, a template of the wrong size, a subject listed twice,
an image that is not base64, a sequence past what the store holds) is
refused whole, naming the field, while the list imported before serves on
untouched; a new partner list counts against watchlist.max_watchlists; and
times out of range already in an older store make no read RPC nor
`watchlist stats` fail."""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from pathlib import Path

import grpc
import pytest

from tests.processes import SERVING, cli, serving
from tests.watchlist.samples import templates_of
from verifier.client import reason_of
from verifier.pipeline import FaceEngine
from verifier.v1 import replication_pb2 as rp
from verifier.v1 import replication_pb2_grpc as rp_grpc
from verifier.v1 import verifier_pb2 as pb
from verifier.v1 import watchlist_pb2 as wl
from verifier.v1 import watchlist_pb2_grpc as wl_grpc
from verifier.watchlist.bundles import FORMAT, export_bundle, key_id, keygen, load_signing_key
from verifier.storage.feed import encode_payload
from verifier.watchlist.store import SubjectEntry, WatchlistStore

pytestmark = pytest.mark.slow

WATCHLIST = "verifier.v1.Watchlist"
DAY = 86400.0


def _sign(content: dict, key: Path) -> bytes:
    """``content`` as a bundle signed by ``key``: a partner that signs what it should not."""
    signing = load_signing_key(key)
    payload = encode_payload(content)
    return json.dumps({"format": FORMAT, "key_id": key_id(signing.public_key()),
                       "payload": base64.b64encode(payload).decode(),
                       "signature": base64.b64encode(signing.sign(payload)).decode()}).encode()


def _content(bundle: bytes) -> dict:
    return json.loads(base64.b64decode(json.loads(bundle)["payload"]))


def _probe(engine: FaceEngine, seed: int) -> pb.FaceSample:
    template = templates_of(engine, 1, seed)[0]
    return pb.FaceSample(template=pb.Template(model_id=template.model_id, version=template.version,
                                              dimension=template.dimension, vector=template.to_bytes()))


def _refused(stub: rp_grpc.BundlesStub, data: bytes) -> tuple[grpc.StatusCode, str, str]:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ImportBundle(rp.ImportBundleRequest(bundle=data), timeout=60)
    return caught.value.code(), reason_of(caught.value), caught.value.details()


def test_bad_fields_refuse_the_bundle_naming_them_and_stored_times_out_of_range_never_fail_a_read(
    tmp_path: Path, engine: FaceEngine
) -> None:
    data = tmp_path / "data"
    assert cli(data, "watchlist", "init").returncode == 0
    private, public, _ = keygen("ALPHA", tmp_path / "alpha")
    beta, beta_public, _ = keygen("BETA", tmp_path / "beta")
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    for pub in (public, beta_public):
        (trusted / pub.name).write_bytes(pub.read_bytes())
    partner = WatchlistStore.create(tmp_path / "partner" / "store.sqlite3", 5.0)
    partner.create_watchlist("wanted", "wanted by ALPHA")
    for i in range(3):
        partner.add_subject(SubjectEntry("wanted", f"P{i}", "warrant", "ALPHA police"), templates_of(engine, 1, i))
    expires = time.time() + DAY
    good = export_bundle(partner, "wanted", load_signing_key(private), "ALPHA", 1, expires)
    env = {"VERIFIER_BUNDLES__TRUSTED_KEYS_DIR": str(trusted), "VERIFIER_WATCHLIST__MAX_WATCHLISTS": "2"}

    def spoiled(sequence: int, change) -> bytes:  # noqa: ANN001 - a function that spoils the content
        content = _content(good)
        content["sequence"] = sequence
        change(content)
        return _sign(content, private)

    subject = lambda i: lambda f: lambda c: f(c["subjects"][i])  # noqa: E731 - a change to subject i
    bad = [
        (subject(1)(lambda s: s.update(expires_at=1e300)), "subjects[1].expires_at"),
        (subject(0)(lambda s: s.update(created_at=float("nan"))), "subjects[0].created_at"),
        (subject(2)(lambda s: s.update(subject_id="../etc")), "subjects[2].subject_id"),
        (subject(1)(lambda s: s.update(reason="warrant\x1b[2J")), "subjects[1].reason"),
        (subject(0)(lambda s: s.update(external_ref="x" * 2000)), "subjects[0].external_ref"),
        (subject(1)(lambda s: s.update(subject_id=7)), "subjects[1].subject_id"),
        (subject(2)(lambda s: s["templates"][0].update(vector=base64.b64encode(b"\0" * 20).decode())),
         "subjects[2].templates[0]"),
        (subject(1)(lambda s: s.update(subject_id="P0")), "subjects[1].subject_id"),
        (subject(0)(lambda s: s.update(images=["not base64!"])), "subjects[0].images[0]"),
        (lambda c: c["subjects"].append("P9"), "subjects[3]"),
        (lambda c: c.update(expires_at=1e300), "expires_at"),
        (lambda c: c.update(description="\x00"), "description"),
    ]
    with serving(data, env) as server, grpc.insecure_channel(server.address) as channel:
        server.wait_health(channel, WATCHLIST, SERVING)
        bundles, watchlist = rp_grpc.BundlesStub(channel), wl_grpc.WatchlistStub(channel)
        assert bundles.ImportBundle(rp.ImportBundleRequest(bundle=good), timeout=60).subjects == 3
        for sequence, (change, field) in enumerate(bad, start=2):
            code, reason, message = _refused(bundles, spoiled(sequence, change))
            assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "BUNDLE_REFUSED"), message
            assert message.startswith(f"{field}:"), (field, message)
        code, reason, message = _refused(bundles, spoiled(30, lambda c: c.update(sequence=10**30)))
        assert (reason, message.split(":")[0]) == ("BUNDLE_REFUSED", "sequence"), message
        # Nothing of any refused bundle is stored: the first list serves whole.
        for i in range(3):
            found = watchlist.Identify(wl.IdentifyRequest(probe=_probe(engine, i), top_k=1), timeout=30)
            assert [(c.subject_id, c.provenance.bundle_sequence) for c in found.candidates] == [(f"P{i}", 1)]
        # The cap counts partner lists: a second issuer's list would be the third.
        watchlist.CreateWatchlist(wl.CreateWatchlistRequest(name="local"), timeout=10)
        others = export_bundle(partner, "wanted", load_signing_key(beta), "BETA", 1, expires)
        assert _refused(bundles, others)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "TOO_MANY_WATCHLISTS")
        assert bundles.ImportBundle(rp.ImportBundleRequest(bundle=spoiled(40, lambda c: None)),
                                    timeout=60).watchlist == "ALPHA:wanted"  # replacing a list is no growth
        names = [w.name for w in watchlist.ListWatchlists(wl.ListWatchlistsRequest(), timeout=10).watchlists]
        assert names == ["ALPHA:wanted", "local"]
    # An older store already holding times no timestamp can hold (imported before
    # they were checked): reads answer, flagged in the log and in stats.
    with sqlite3.connect(data / "watchlist" / "store.sqlite3") as conn:
        conn.execute("UPDATE subjects SET created_at = 1e300, expires_at = 1e300 WHERE subject_id = 'P0'")
        conn.execute("UPDATE subjects SET expires_at = -1e999 WHERE subject_id = 'P1'")
        conn.execute("UPDATE partner_lists SET created_at = -1e300, expires_at = 1e999")
    with serving(data, env) as server, grpc.insecure_channel(server.address) as channel:
        server.wait_health(channel, WATCHLIST, SERVING)
        watchlist = wl_grpc.WatchlistStub(channel)
        kept = watchlist.GetSubject(wl.GetSubjectRequest(watchlist="ALPHA:wanted", subject_id="P0"), timeout=10)
        assert kept.subject.expires.ToDatetime().year == 9999
        found = watchlist.Identify(wl.IdentifyRequest(probe=_probe(engine, 0), top_k=1), timeout=30)
        assert [c.subject_id for c in found.candidates] == ["P0"]
        assert found.candidates[0].provenance.expires.ToDatetime().year == 9999
        # P1's expiry (minus infinity) has passed: not found, as an expired subject is not.
        assert watchlist.Identify(wl.IdentifyRequest(probe=_probe(engine, 1), top_k=1), timeout=30).candidates == []
        assert watchlist.Identify(wl.IdentifyRequest(probe=_probe(engine, 2), top_k=1),
                                  timeout=30).candidates[0].subject_id == "P2"
        assert len(watchlist.ListWatchlists(wl.ListWatchlistsRequest(), timeout=10).watchlists) == 2
        assert "a stored time 1e+300 is outside what a timestamp can hold" in server.log
    stats = cli(data, "watchlist", "stats")
    assert stats.returncode == 0, stats.stderr
    assert "TIMES OUT OF RANGE: 3 records" in stats.stdout
    assert "subject ALPHA:wanted/P0: created 1e+300" in stats.stdout and "partner list ALPHA:wanted" in stats.stdout
