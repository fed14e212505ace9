"""Certificates for mutual TLS: a development CA, the server's certificate and
one client certificate per role, made with ``cryptography``.

A client certificate names its holder in the subject common name (the identity
the audit trail records, for example ``kiosk-gate-07``) and its role in one
subject-alternative-name URI, ``urn:verifier:role:<role>``. A SAN URI rather
than an OU because SANs are where X.509 profiles put machine-readable
identities today, a URI cannot be confused with free text, and any CA
(including a production one) can issue it. Keys are ECDSA P-256: small, and
the cheapest handshakes.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from verifier.security.roles import Role

ROLE_URI_PREFIX = "urn:verifier:role:"
SERVER_STEM = "server"
CA_STEM = "ca"
# Development certificates last a year; production brings its own CA.
DEV_VALIDITY = timedelta(days=365)


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @classmethod
    def load(cls, directory: Path, stem: str) -> "Issued":
        """``<stem>.pem`` and ``<stem>.key`` from ``directory`` (to issue more certificates from a CA)."""
        key = serialization.load_pem_private_key((directory / f"{stem}.key").read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{directory / stem}.key is not an EC key")
        return cls(x509.load_pem_x509_certificate((directory / f"{stem}.pem").read_bytes()), key)

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """``<stem>.pem`` and ``<stem>.key`` in ``directory``; the key readable by its owner only."""
        cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
        cert_path.write_bytes(self.certificate_pem())
        descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(self.key_pem())
        return cert_path, key_path


def _name(common_name: str, organization: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def new_ca(common_name: str = "verifier development CA", *, valid_from: datetime | None = None,
           validity: timedelta = DEV_VALIDITY) -> Issued:
    """A self-signed CA that may sign end-entity certificates only (path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    start = valid_from or datetime.now(UTC) - timedelta(minutes=5)
    name = _name(common_name, "verifier")
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(certificate, key)


def issue(
    ca: Issued, common_name: str, *, role: Role | None = None, server_names: tuple[str, ...] = (),
    valid_from: datetime | None = None, validity: timedelta = DEV_VALIDITY,
) -> Issued:
    """A certificate signed by ``ca``: a client certificate when ``role`` is
    given (the role as a SAN URI), a server certificate for ``server_names``
    (DNS names or IP addresses) otherwise."""
    key = ec.generate_private_key(ec.SECP256R1())
    start = valid_from or datetime.now(UTC) - timedelta(minutes=5)
    names: list[x509.GeneralName] = []
    for server_name in server_names:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(server_name)))
        except ValueError:
            names.append(x509.DNSName(server_name))
    if role is not None:
        names.append(x509.UniformResourceIdentifier(ROLE_URI_PREFIX + role.value))
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if role is not None else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, "verifier"))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def init_dev_ca(directory: Path, server_names: tuple[str, ...] = ("localhost", "127.0.0.1")) -> list[Path]:
    """A development CA (``ca.pem``, ``ca.key``), a server certificate for
    ``server_names`` (``server.pem``, ``server.key``) and one client
    certificate per role (``kiosk.pem``/``kiosk.key``, ...), in ``directory``.
    Refuses to overwrite an existing CA, so client certificates already handed
    out stay valid."""
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / f"{CA_STEM}.pem").exists():
        raise FileExistsError(f"{directory / (CA_STEM + '.pem')} exists; remove the folder to start again")
    ca = new_ca()
    written = list(ca.write(directory, CA_STEM))
    written += issue(ca, "localhost", server_names=server_names).write(directory, SERVER_STEM)
    for role in Role:
        written += issue(ca, role.value, role=role).write(directory, role.value)
    return written
