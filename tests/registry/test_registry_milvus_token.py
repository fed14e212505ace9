"""A Milvus server that asks for a token (authorization on, as a deployment's
should be): the registry's index reaches it with the token read from
``registry.milvus_token_file``, and without a token or with a wrong one every
call is refused INDEX_UNAVAILABLE, never answered as an empty search. The
watch-lists read the same settings block (verifier.store_config)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import local_milvus
from verifier.config import Settings
from verifier.errors import Reason, VerifierError
from verifier.registry.indexing import build_index
from verifier.vectors.milvus_server import LocalMilvus

DIMENSION = 16
# The server's built-in first user, which a server with authorization on starts with.
ROOT_TOKEN = "root:Milvus"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMilvus]:
    with local_milvus(tmp_path_factory.mktemp("milvus-auth"),
                      {"common.security.authorizationEnabled": "true"}) as server:
        yield server


def _settings(server: LocalMilvus, folder: Path, token: str | None, collection: str) -> Settings:
    settings = Settings(data_dir=folder)
    settings.registry.index, settings.registry.milvus_uri = "milvus", server.uri
    settings.registry.milvus_collection = collection
    settings.registry.milvus_timeout_seconds = settings.registry.milvus_check_timeout_seconds = 5.0
    if token is not None:
        token_file = folder / "milvus.token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        settings.registry.milvus_token_file = token_file
    return settings


def test_the_token_file_opens_a_server_that_asks_for_one(secured: LocalMilvus, tmp_path: Path) -> None:
    vectors = np.random.default_rng(3).standard_normal((4, DIMENSION)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = build_index(_settings(secured, tmp_path, ROOT_TOKEN, "with_token"), DIMENSION, None, "model")
    try:
        index.add(np.arange(10, 14, dtype=np.int64), vectors)
        scores, ids = index.search(vectors[2], 1)
        assert ids.tolist() == [12] and scores[0] == pytest.approx(1.0, abs=1e-4)
        assert index.size() == 4
    finally:
        index.close()


@pytest.mark.parametrize("token", [None, "root:not-the-password"], ids=["no token", "wrong token"])
def test_a_missing_or_wrong_token_is_refused_not_answered_empty(secured: LocalMilvus, tmp_path: Path,
                                                                token: str | None) -> None:
    with pytest.raises(VerifierError) as refused:
        index = build_index(_settings(secured, tmp_path, token, "without_token"), DIMENSION, None, "model")
        index.search(np.ones(DIMENSION, dtype=np.float32) / np.sqrt(DIMENSION), 1)  # not reached: connecting fails
    assert refused.value.reason is Reason.INDEX_UNAVAILABLE
