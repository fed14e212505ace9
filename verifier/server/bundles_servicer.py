"""The Bundles servicer: a signed partner bundle imported over gRPC (admin only, audited)."""

from __future__ import annotations

import grpc

from verifier.config import BundleSettings
from verifier.server.errors import mapped
from verifier.v1 import replication_pb2 as rp
from verifier.v1 import replication_pb2_grpc as rp_grpc
from verifier.watchlist.bundles import import_bundle, trusted_keys
from verifier.watchlist.service import WatchlistService


class BundlesServicer(rp_grpc.BundlesServicer):
    def __init__(self, service: WatchlistService, settings: BundleSettings) -> None:
        self.service = service
        self.settings = settings

    @mapped
    def ImportBundle(
        self, request: rp.ImportBundleRequest, context: grpc.ServicerContext
    ) -> rp.ImportBundleResponse:
        # The trusted keys are read at each import: a partner key added or
        # withdrawn by the operator counts from the next bundle on.
        bundle, subjects = import_bundle(
            request.bundle, trusted_keys(self.settings.trusted_keys_dir), self.settings.max_bytes,
            self.service.engine, self.service.store.partner_sequence, self.service.replace_partner_list,
            self.service.settings.max_templates_per_subject,
        )
        return rp.ImportBundleResponse(watchlist=bundle.target, issuing_agency=bundle.issuer,
                                       bundle_sequence=bundle.sequence, subjects=subjects)
