"""Roles and the one table of which role may call which RPC.

A caller's role comes from its client certificate (see
``verifier.server.identity``); the authorization interceptor looks the method
up here and refuses anything the table does not grant, unknown methods
included: refusal is the default branch.
"""

from __future__ import annotations

from enum import Enum


class Role(str, Enum):
    KIOSK = "kiosk"
    OPERATOR = "operator"
    AUDITOR = "auditor"
    ADMIN = "admin"
    # A replica server following this one's change feed.
    REPLICA = "replica"


KIOSK, OPERATOR, AUDITOR, ADMIN, REPLICA = Role.KIOSK, Role.OPERATOR, Role.AUDITOR, Role.ADMIN, Role.REPLICA
EVERYONE = frozenset(Role)

# Full gRPC method name -> the roles that may call it. Admin may call
# everything listed; a method that is not listed is refused to every role.
PERMISSIONS: dict[str, frozenset[Role]] = {
    # 1:1 decisions at the gate.
    "/verifier.v1.FaceVerifier/Verify": frozenset({KIOSK, ADMIN}),
    "/verifier.v1.FaceVerifier/ExtractTemplate": frozenset({KIOSK, ADMIN}),
    "/verifier.v1.FaceVerifier/CompareTemplates": frozenset({KIOSK, ADMIN}),
    # The gate transaction: 1:1, replay, quality and every face against the watch-lists.
    "/verifier.v1.Gate/Screen": frozenset({KIOSK, ADMIN}),
    "/verifier.v1.Gate/ScreenStream": frozenset({KIOSK, ADMIN}),
    # 1:N search at the gate.
    "/verifier.v1.Watchlist/Identify": frozenset({KIOSK, ADMIN}),
    # Watch-list reads: operators see what they edit, auditors what was done.
    "/verifier.v1.Watchlist/ListWatchlists": frozenset({OPERATOR, AUDITOR, ADMIN}),
    "/verifier.v1.Watchlist/GetSubject": frozenset({OPERATOR, AUDITOR, ADMIN}),
    # Watch-list writes.
    "/verifier.v1.Watchlist/EnrollSubject": frozenset({OPERATOR, ADMIN}),
    "/verifier.v1.Watchlist/RemoveSubject": frozenset({OPERATOR, ADMIN}),
    # Lists themselves come and go by an administrator only.
    "/verifier.v1.Watchlist/CreateWatchlist": frozenset({ADMIN}),
    "/verifier.v1.Watchlist/DeleteWatchlist": frozenset({ADMIN}),
    # The traveller registry: kiosks register and verify, operators update
    # and erase; a kiosk reads a record without its templates.
    "/verifier.v1.Registry/Register": frozenset({KIOSK, ADMIN}),
    "/verifier.v1.Registry/VerifyTraveller": frozenset({KIOSK, ADMIN}),
    "/verifier.v1.Registry/UpdateTraveller": frozenset({OPERATOR, ADMIN}),
    "/verifier.v1.Registry/EraseTraveller": frozenset({OPERATOR, ADMIN}),
    "/verifier.v1.Registry/GetTraveller": frozenset({KIOSK, OPERATOR, AUDITOR, ADMIN}),
    # Replication: the feed and snapshots to replicas; where a server stands,
    # to anyone (the health detail of a replica: how old its data is);
    # promotion by an administrator only.
    "/verifier.v1.Replication/Follow": frozenset({REPLICA, ADMIN}),
    "/verifier.v1.Replication/Snapshot": frozenset({REPLICA, ADMIN}),
    "/verifier.v1.Replication/Status": EVERYONE,
    "/verifier.v1.Replication/Promote": frozenset({ADMIN}),
    # A partner's signed bundle replaces its list: an administrator's act.
    "/verifier.v1.Bundles/ImportBundle": frozenset({ADMIN}),
    # The audit trail.
    "/verifier.v1.Audit/ListRecords": frozenset({AUDITOR, ADMIN}),
    # Liveness and schema: harmless to every authenticated caller.
    "/grpc.health.v1.Health/Check": EVERYONE,
    "/grpc.health.v1.Health/Watch": EVERYONE,
    "/grpc.health.v1.Health/List": EVERYONE,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": EVERYONE,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": EVERYONE,
}


def allowed(method: str, role: Role) -> bool:
    """Whether ``role`` may call ``method`` (a full ``/package.Service/Rpc`` name)."""
    return role in PERMISSIONS.get(method, frozenset())
