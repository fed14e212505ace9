"""What the load is made of: the RPCs to call (:class:`Operation`), the gate
images and chip templates they carry (:func:`prepare`), and the watch-list
gallery and registered traveller the search and 1:1-by-id operations need,
set up through the API and removed afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc

from benchmarks.loadgen.server import REGISTRY_SERVICE, VERIFIER_SERVICE, WATCHLIST_SERVICE
from benchmarks.samples import Box, GatePair, chip_jpeg, gate_pairs
from verifier.config import REPO_ROOT, get_settings
from verifier.modelzoo.fetch import fetch_asset
from verifier.modelzoo.manifest import load_manifest
from verifier.v1 import registry_pb2 as rg
from verifier.v1 import registry_pb2_grpc as rg_grpc
from verifier.v1 import verifier_pb2 as pb
from verifier.v1 import verifier_pb2_grpc as pb_grpc
from verifier.v1 import watchlist_pb2 as wl
from verifier.v1 import watchlist_pb2_grpc as wl_grpc

# The traveller the verify-traveller operation registers (and erases afterwards).
LOADGEN_TRAVELLER = "loadgen-traveller"
LOADGEN_WATCHLIST = "loadgen"
SUBJECT_PREFIX = "loadgen-"
LFW_IMAGES = REPO_ROOT.parent / "shared" / "data" / "lfw-dev" / "images"
# The sdist photos: three of one person (the pairs) and one of another.
PEOPLE = {"obama": ["obama.jpg", "obama2.jpg", "obama3.jpg"], "biden": ["biden.jpg"]}


@dataclass(frozen=True)
class Operation:
    """One RPC to load, with the requests it cycles through and what a right answer looks like."""

    name: str
    method: str
    requests: Sequence[Any]
    response_type: Any
    expected: Callable[[Any], bool]

    def callable_on(self, channel: grpc.Channel) -> grpc.UnaryUnaryMultiCallable:
        return channel.unary_unary(
            self.method,
            request_serializer=type(self.requests[0]).SerializeToString,
            response_deserializer=self.response_type.FromString,
        )

def sdist_photos() -> dict[str, bytes]:
    settings = get_settings()
    spec = load_manifest(settings.models.manifest).assets["face-recognition-photos"]
    return {name: path.read_bytes() for name, path in fetch_asset(spec, settings.models.cache_dir).items()}


@dataclass(frozen=True)
class Material:
    """What the requests are made of: gate pairs, their chips' templates, and
    chip photos of every person (for a watch-list gallery)."""

    pairs: list[GatePair]
    templates: list[pb.Template]
    chips: dict[str, list[bytes]]


def prepare(channel: grpc.Channel) -> Material:
    """Gate images from the sdist photos; the server itself locates the faces to
    cut around and makes the chip templates."""
    stub = pb_grpc.FaceVerifierStub(channel)

    def extract(image: bytes) -> pb.ExtractTemplateResponse:
        return stub.ExtractTemplate(pb.ExtractTemplateRequest(image=pb.Image(data=image)), timeout=30)

    photos = sdist_photos()
    boxes: dict[str, Box] = {}
    for names in PEOPLE.values():
        for name in names:
            box = extract(photos[name]).face.box
            boxes[name] = (box.x1, box.y1, box.x2, box.y2)
    pairs = gate_pairs(photos, boxes, PEOPLE)
    chips = {person: [chip_jpeg(photos[name], boxes[name])[0] for name in names] for person, names in PEOPLE.items()}
    return Material(pairs, [extract(pair.chip).template for pair in pairs], chips)


def verifier_operations(material: Material) -> list[Operation]:
    service = f"/{VERIFIER_SERVICE}/"
    pairs = material.pairs
    return [
        Operation(
            "verify-images", service + "Verify",
            [pb.VerifyRequest(probe=pb.Image(data=p.probe), reference=pb.FaceSample(image=pb.Image(data=p.chip)))
             for p in pairs],
            pb.VerifyResponse, lambda r: bool(r.match),
        ),
        Operation(
            "verify-template", service + "Verify",
            [pb.VerifyRequest(probe=pb.Image(data=p.probe), reference=pb.FaceSample(template=t))
             for p, t in zip(pairs, material.templates)],
            pb.VerifyResponse, lambda r: bool(r.match),
        ),
        Operation(
            "extract-template", service + "ExtractTemplate",
            [pb.ExtractTemplateRequest(image=pb.Image(data=p.chip)) for p in pairs],
            pb.ExtractTemplateResponse, lambda r: r.template.dimension > 0,
        ),
    ]


def identify_operation(material: Material) -> Operation:
    """Each gate frame searched against the load-test watch-list: its person must come first."""
    expected = {SUBJECT_PREFIX + pair.person for pair in material.pairs}
    return Operation(
        "identify", f"/{WATCHLIST_SERVICE}/Identify",
        [wl.IdentifyRequest(probe=pb.FaceSample(image=pb.Image(data=p.probe)), watchlists=[LOADGEN_WATCHLIST])
         for p in material.pairs],
        wl.IdentifyResponse, lambda r: len(r.candidates) > 0 and r.candidates[0].subject_id in expected,
    )


def _lfw_people(count: int) -> dict[str, list[bytes]]:
    """The first image of the first ``count`` LFW people (none of the sdist people), when present."""
    if count <= 0 or not LFW_IMAGES.is_dir():
        return {}
    folders = sorted(
        f for f in LFW_IMAGES.iterdir() if f.is_dir() and not any(p in f.name.lower() for p in PEOPLE)
    )[:count]
    return {f.name: [min(f.glob("*.jpg")).read_bytes()] for f in folders if any(f.glob("*.jpg"))}


def _remove(stub: wl_grpc.WatchlistStub, subject_id: str) -> None:
    try:
        stub.RemoveSubject(wl.RemoveSubjectRequest(watchlist=LOADGEN_WATCHLIST, subject_id=subject_id), timeout=30)
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.NOT_FOUND:
            raise


def traveller_operation(material: Material) -> Operation:
    """Each gate frame verified against the registered traveller's stored templates by id."""
    return Operation(
        "verify-traveller", f"/{REGISTRY_SERVICE}/VerifyTraveller",
        [rg.VerifyTravellerRequest(traveller_id=LOADGEN_TRAVELLER, live_capture=pb.Image(data=p.probe))
         for p in material.pairs],
        rg.VerifyTravellerResponse, lambda r: bool(r.match),
    )


@contextmanager
def registered_traveller(channel: grpc.Channel, material: Material) -> Iterator[str]:
    """The first pair's person registered (chip photo and live capture) through
    the API as ``LOADGEN_TRAVELLER``, erased afterwards."""
    stub = rg_grpc.RegistryStub(channel)
    pair = material.pairs[0]
    stub.Register(rg.RegisterRequest(
        traveller_id=LOADGEN_TRAVELLER, document_number="LOADGEN1", chip_photo=pb.Image(data=pair.chip),
        live_capture=pb.Image(data=pair.probe), consent=rg.Consent(gate_id="loadgen", text_version="loadgen"),
    ), timeout=30)
    try:
        yield LOADGEN_TRAVELLER
    finally:
        stub.EraseTraveller(rg.EraseTravellerRequest(traveller_id=LOADGEN_TRAVELLER), timeout=30)


@contextmanager
def enrolled_gallery(channel: grpc.Channel, material: Material, lfw_people: int) -> Iterator[dict[str, int]]:
    """The ``loadgen`` watch-list with every sdist person (their chip photos) and
    LFW people as distractors, enrolled through the API and removed afterwards."""
    stub = wl_grpc.WatchlistStub(channel)
    try:
        stub.CreateWatchlist(
            wl.CreateWatchlistRequest(name=LOADGEN_WATCHLIST, description="benchmarks.loadgen gallery"), timeout=30
        )
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
    enrolled: list[str] = []
    skipped = 0
    try:
        for name, images in {**material.chips, **_lfw_people(lfw_people)}.items():
            subject_id = SUBJECT_PREFIX + name
            _remove(stub, subject_id)  # left over from an interrupted run against the same server
            subject = wl.Subject(
                watchlist=LOADGEN_WATCHLIST, subject_id=subject_id, reason="load test", source_agency="benchmarks"
            )
            samples = [pb.FaceSample(image=pb.Image(data=image)) for image in images]
            try:
                stub.EnrollSubject(wl.EnrollSubjectRequest(subject=subject, samples=samples), timeout=30)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                    raise
                skipped += 1
                continue
            enrolled.append(subject_id)
        searched = stub.Identify(
            wl.IdentifyRequest(probe=pb.FaceSample(template=material.templates[0]), watchlists=[LOADGEN_WATCHLIST]),
            timeout=30,
        )
        yield {"subjects": len(enrolled), "templates": searched.gallery_size, "skipped_without_face": skipped}
    finally:
        for subject_id in enrolled:
            _remove(stub, subject_id)
