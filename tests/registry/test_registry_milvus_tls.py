"""A Milvus server that speaks only TLS (``common.security.tlsMode: 1``, its
certificate from a private CA): the registry's index reaches it at an https://
URI with ``registry.milvus_ca_file``, and refuses INDEX_UNAVAILABLE, never an
empty answer, when it cannot check the server (the system's roots) or is
pointed at it without TLS. The watch-lists read the same settings block."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import local_milvus
from verifier.config import Settings
from verifier.errors import Reason, VerifierError
from verifier.registry.indexing import build_index
from verifier.security.certs import init_dev_ca
from verifier.vectors.milvus_server import LocalMilvus

DIMENSION = 16


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalMilvus, Path]]:
    """The server, and the CA that signed its certificate (for localhost and 127.0.0.1)."""
    certs = tmp_path_factory.mktemp("milvus-certs")
    init_dev_ca(certs)
    settings = {"common.security.tlsMode": "1", "tls.serverPemPath": str(certs / "server.pem"),
                "tls.serverKeyPath": str(certs / "server.key"), "tls.caPemPath": str(certs / "ca.pem")}
    with local_milvus(tmp_path_factory.mktemp("milvus-tls"), settings) as server:
        yield server, certs / "ca.pem"


def _settings(uri: str, folder: Path, ca: Path | None, collection: str) -> Settings:
    settings = Settings(data_dir=folder)
    settings.registry.index, settings.registry.milvus_uri = "milvus", uri
    settings.registry.milvus_collection, settings.registry.milvus_ca_file = collection, ca
    settings.registry.milvus_timeout_seconds = settings.registry.milvus_check_timeout_seconds = 5.0
    return settings


def test_an_https_uri_with_the_servers_ca_reaches_it(tls: tuple[LocalMilvus, Path], tmp_path: Path) -> None:
    server, ca = tls
    vectors = np.random.default_rng(5).standard_normal((3, DIMENSION)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = build_index(_settings(f"https://127.0.0.1:{server.port}", tmp_path, ca, "over_tls"), DIMENSION,
                        None, "model")
    try:
        index.add(np.arange(20, 23, dtype=np.int64), vectors)
        scores, ids = index.search(vectors[1], 1)
        assert ids.tolist() == [21] and scores[0] == pytest.approx(1.0, abs=1e-4)
    finally:
        index.close()


@pytest.mark.parametrize("scheme, with_ca", [("https", False), ("http", False)],
                         ids=["a server the system's roots do not vouch for", "no TLS"])
def test_a_server_it_cannot_check_or_reach_in_clear_is_refused(
        tls: tuple[LocalMilvus, Path], tmp_path: Path, scheme: str, with_ca: bool) -> None:
    server, ca = tls
    uri = f"{scheme}://127.0.0.1:{server.port}"
    with pytest.raises(VerifierError) as refused:
        index = build_index(_settings(uri, tmp_path, ca if with_ca else None, "refused"), DIMENSION, None, "model")
        index.search(np.ones(DIMENSION, dtype=np.float32) / np.sqrt(DIMENSION), 1)  # not reached: connecting fails
    assert refused.value.reason is Reason.INDEX_UNAVAILABLE


def test_a_ca_file_that_is_not_there_is_refused(tls: tuple[LocalMilvus, Path], tmp_path: Path) -> None:
    server, _ = tls
    settings = _settings(f"https://127.0.0.1:{server.port}", tmp_path, tmp_path / "missing-ca.pem", "no_ca")
    with pytest.raises(VerifierError) as refused:
        build_index(settings, DIMENSION, None, "model")
    assert refused.value.reason is Reason.INDEX_UNAVAILABLE
