"""Certificates for the security tests: the development set, plus an expired
client certificate and one from a foreign CA, all made with our certs module."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from verifier.security.certs import CA_STEM, Issued, init_dev_ca, issue, new_ca
from verifier.security.roles import Role


@pytest.fixture(scope="session")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tls")
    init_dev_ca(directory)
    ca = Issued.load(directory, CA_STEM)
    long_ago = datetime.now(UTC) - timedelta(days=30)
    issue(ca, "expired-kiosk", role=Role.KIOSK, valid_from=long_ago, validity=timedelta(days=1)).write(
        directory, "expired"
    )
    issue(new_ca("someone else's CA"), "admin", role=Role.ADMIN).write(directory, "foreign")
    return directory
