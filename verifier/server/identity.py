"""Who is calling: the identity and role in the verified client certificate.

The TLS handshake has already checked the certificate against the configured
CA (and its validity period) before any handler runs; this only reads what
gRPC exposes of it: the subject common name as the identity, and the role
from the one SAN URI ``urn:verifier:role:<role>``.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from verifier.security.certs import ROLE_URI_PREFIX
from verifier.security.roles import Role

# Without TLS (loopback development only) every caller acts as an administrator.
LOCAL_ROLE = Role.ADMIN


@dataclass(frozen=True)
class Caller:
    """A caller's identity and role; ``role`` is None when it has none we recognise."""

    identity: str
    role: Role | None


def _peer_host(context: grpc.ServicerContext) -> str:
    """``ipv4:127.0.0.1`` from ``ipv4:127.0.0.1:53412``: one identity per host, not per connection."""
    return context.peer().rsplit(":", 1)[0]


def caller_of(context: grpc.ServicerContext) -> Caller:
    """The caller of this call, from its verified client certificate.

    Without a certificate (a server without TLS) the identity is the peer's
    address (``peer:ipv4:127.0.0.1``) and the role None. A certificate naming
    no role, an unknown one, or more than one has role None too: it is
    authenticated but may call nothing.
    """
    properties = context.auth_context()
    names = properties.get("x509_common_name")
    if not names:
        return Caller(f"peer:{_peer_host(context)}", None)
    roles = {uri.decode()[len(ROLE_URI_PREFIX):] for uri in properties.get("peer_uri", ())
             if uri.decode().startswith(ROLE_URI_PREFIX)}
    known = {role.value for role in Role}
    role = Role(roles.pop()) if len(roles) == 1 and roles <= known else None
    return Caller(names[0].decode(), role)


def effective_caller(context: grpc.ServicerContext, tls: bool) -> Caller:
    """The caller as authorization sees it: on a server without TLS, the
    local caller acts with :data:`LOCAL_ROLE`."""
    caller = caller_of(context)
    if not tls and caller.role is None:
        return Caller(caller.identity, LOCAL_ROLE)
    return caller
