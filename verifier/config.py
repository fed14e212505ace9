"""Every setting of the service, typed, with defaults that serve, read once.

Values come from the environment (``VERIFIER_<GROUP>__<NAME>``, for example
``VERIFIER_SERVER__PORT=50052``) so that a deployment changes behaviour without
touching code; nothing else in the package holds a threshold, limit or path.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from verifier.edge_config import AdmissionSettings, AuditSettings, SecuritySettings, ServerSettings
from verifier.store_config import BundleSettings, RegistrySettings, ReplicationSettings, WatchlistSettings

REPO_ROOT = Path(__file__).resolve().parents[1]


class ModelSettings(BaseModel):
    """Where the model pack is described and cached, and how sessions run."""

    manifest: Path = REPO_ROOT / "models" / "manifest.toml"
    cache_dir: Path = REPO_ROOT / "models" / "cache"
    pack: str = "default"
    # "cpu", "cuda" (refused at start when ONNX Runtime has no CUDA provider) or
    # "auto" (CUDA when present, else CPU).
    execution_provider: Literal["cpu", "cuda", "auto"] = "auto"
    # Which runtime runs the models on the CPU (verifier.modelzoo.runtime):
    # "openvino", "onnxruntime", or "auto": OpenVINO on the CPU, ONNX Runtime
    # where the CUDA provider runs them (README, Speed: why OpenVINO is the default).
    runtime: Literal["auto", "onnxruntime", "openvino"] = "auto"
    # The precision OpenVINO computes in: "f32", "bf16" (refused on a CPU
    # without bf16 instructions), or "auto": bf16 where the CPU has it and the
    # pack has a calibration table for it, else f32. Each runtime and precision
    # is its own operating point, served only with its own calibration table.
    precision: Literal["auto", "f32", "bf16"] = "auto"
    # OpenVINO: a graph compiled for one input shape runs about 1.4x faster than
    # the any-shape graph, which re-plans on every change of shape (README,
    # Speed). A shape met `openvino_static_after` times gets its own graph,
    # compiled in the background at most once every
    # `openvino_compile_interval_seconds` (no caller can buy compilations
    # faster), the `openvino_static_shapes` most recently used kept (0: never).
    openvino_static_shapes: int = Field(default=12, ge=0)
    openvino_static_after: int = Field(default=3, ge=1)
    openvino_compile_interval_seconds: float = Field(default=2.0, gt=0)
    # Threads inside one inference while other requests are in flight: they
    # already keep every core busy, so one thread each serves best (README:
    # two threads for every inference cost 12 % of the throughput).
    intra_op_threads: int = Field(default=1, ge=1)
    # Threads inside one inference when it is the only analysis running, so an
    # idle gate answers one traveller with every core (1: never).
    idle_intra_op_threads: int = Field(default=2, ge=1)
    # Let the idle-time threads spin while waiting for work: a little lower
    # latency, but cycles taken from the next requests when load arrives.
    idle_allow_spinning: bool = False
    # Licence tokens the deployer accepts (a model's `requires_acceptance` in the
    # manifest): a pack holding a model whose token is not listed is refused at
    # start. Example: VERIFIER_MODELS__ACCEPT_LICENCES='["insightface-non-commercial"]'.
    accept_licences: tuple[str, ...] = ()


class ImageUseLimits(BaseModel):
    """The largest image accepted for one use, checked before anything is decoded."""

    max_bytes: int = Field(gt=0)
    max_pixels: int = Field(gt=0)
    # The formats this use may arrive in (of those the service can read:
    # JPEG, MPO, PNG, JPEG2000, WEBP).
    formats: tuple[str, ...]


class ImagingSettings(BaseModel):
    """Limits on the images we accept, per use, and on what decoding may cost."""

    # The live capture (Verify and Identify probes, ExtractTemplate): at most a
    # camera frame, 4096x3072 (12.6 Mpixel); a JPEG of that is 1-4 MB. Cameras
    # do not write JPEG 2000, and a camera-sized one costs about 0.5 s to decode
    # (a JPEG of that size 50 ms, a WEBP 160 ms), so it is not a live format.
    live: ImageUseLimits = ImageUseLimits(
        max_bytes=8 * 1024 * 1024, max_pixels=4096 * 3072, formats=("JPEG", "MPO", "PNG", "WEBP")
    )
    # The chip photo (Verify reference, a gate's reference, ExtractTemplate of
    # kind DOCUMENT): ICAO 9303 DG2 portraits are typically 15-30 KB at about
    # 480x640 (0.3 Mpixel). 2.5 Mpixel and 1 MiB leave room for ISO/IEC 39794-5
    # high-resolution portraits and a scanned print while refusing a camera
    # frame. DG2 holds JPEG or JPEG 2000; PNG for a scanned photo.
    document: ImageUseLimits = ImageUseLimits(
        max_bytes=1024 * 1024, max_pixels=2_500_000, formats=("JPEG", "JPEG2000", "PNG")
    )
    # Watch-list enrolment (an agency's photos, an authorised operator): up to a
    # 24 Mpixel camera's full frame (6000x4000).
    # MPO is a camera's multi-picture JPEG: its first picture is used.
    enrolment: ImageUseLimits = ImageUseLimits(
        max_bytes=8 * 1024 * 1024, max_pixels=24_000_000, formats=("JPEG", "MPO", "PNG", "JPEG2000", "WEBP")
    )
    min_side: int = 32
    # JPEG 2000 is decoded in full (OpenJPEG through OpenCV, outside the GIL):
    # measured on this machine, 43 ms at 0.8 Mpixel, 104 ms at 1.9, 435 ms at
    # 4. Larger ones (an enrolment photo) must come as JPEG.
    max_jpeg2000_pixels: int = Field(default=2_500_000, gt=0)
    # The most pixels a header may declare per byte of the file: above it the
    # header lies (a few hundred bytes claiming tens of megapixels) and the
    # image is refused before decoding. Measured on the real photos (5,408
    # JPEGs, 208 PNGs, 400 PGMs of the shared smoke and LFW sets and the test
    # photos, and each re-encoded at low quality): the most was JPEG 19.5 as
    # sent and 36 at quality 20, PNG 5.4, JPEG 2000 70 at 200:1, WEBP 69 at
    # quality 30. The limits leave a margin of 3 to 10 over that.
    max_pixels_per_byte: dict[str, float] = {"JPEG": 100.0, "MPO": 100.0, "PNG": 50.0, "JPEG2000": 300.0, "WEBP": 300.0}
    # Below this many declared pixels a decode is cheap whatever the bytes
    # (a flat 1 Mpixel test card may well compress past the ratios above).
    plausibility_floor_pixels: int = Field(default=1_000_000, ge=0)
    # Decodes of more pixels than this take tens of MB and tens of ms or more:
    # at most max_concurrent_large_decodes run at once, and a request that
    # waits longer than large_decode_wait_seconds for its turn is refused
    # OVERLOADED instead of queueing without bound.
    large_decode_pixels: int = Field(default=2_000_000, ge=0)
    max_concurrent_large_decodes: int = Field(default=2, ge=1)
    large_decode_wait_seconds: float = Field(default=2.0, gt=0)
    # A decoded image whose longer side exceeds this is decoded at a reduced
    # scale (JPEG, JPEG 2000) or resized. It covers the largest live frame
    # (4096x3072): the eye-distance floor is in the pixels of the frame as
    # sent, so a gate camera's frame is looked at in full (a companion at the
    # back may have eyes 16 px apart in a 4K frame). Only larger enrolment
    # photos are reduced, where the floor follows (``DetectedFaces``).
    working_max_side: int = Field(default=4096, ge=320)


class DetectorSettings(BaseModel):
    min_score: float = Field(default=0.7, gt=0.0, lt=1.0, allow_inf_nan=False)
    nms_iou: float = Field(default=0.3, gt=0.0, le=1.0, allow_inf_nan=False)
    # Faces smaller than this (box side, original pixels) are not acquired.
    min_face_px: int = Field(default=24, ge=1)
    # Quality floor: a face whose eyes are closer than this (original pixels) is
    # refused with FACE_TOO_SMALL. The served threshold's false-match rate was
    # measured to hold down to 16 px (`verifier eval --condition downscale-16px`,
    # README); below it nobody has shown that it does. 0: no floor.
    min_eye_distance_px: float = Field(default=16.0, ge=0.0, allow_inf_nan=False)
    # Pad the image to the detector's aspect ratio instead of squashing it
    # (portrait chip photos into a 4:3 input).
    letterbox: bool = True
    # The fine pass (verifier.face.detector) looks at a frame at the scale
    # where eyes min_eye_distance_px apart span this many pixels of the
    # detector's input, and keeps candidates scoring at least
    # candidate_min_score, each confirmed at min_score by the second look.
    # Measured with RetinaFace mnet-0.25 on 600 LFW dev heads pasted into
    # generated backgrounds (`python -m benchmarks.detector_floor`, README):
    # at 12 px 97.7 % found at score 0.7, 99.5 % at 0.3.
    floor_input_eye_px: float = Field(default=12.0, gt=0, allow_inf_nan=False)
    candidate_min_score: float = Field(default=0.3, gt=0.0, lt=1.0, allow_inf_nan=False)
    # Cost bound of one image's fine pass: the detector input pixels it may
    # use. The default covers a 3840x2160 frame at the floor (0.75 scale:
    # 4.67 Mpixel); a larger image is looked at more coarsely, so its floor
    # rises (logged, and reported in the response's faces).
    max_input_pixels: int = Field(default=4_800_000, ge=76_800)
    # The second look at each face: its region, this many times the box's
    # height, is resampled from the full-resolution image to the detector's
    # input size, and the five landmarks come from it. 2.0 shows
    # a face as LFW's 250x250 portraits do at that size (box about half the
    # height), where the thresholds were measured.
    region_context: float = Field(default=2.0, ge=1.2, le=4.0, allow_inf_nan=False)
    # Looks at each face's region, each centred on the box the last found
    # (README, Detection: how far a face's score moves with the frame it is
    # in, for 1, 2 and 3 looks).
    region_looks: int = Field(default=2, ge=1, le=4)
    # Then this many more looks, each region shifted diagonally by
    # region_jitter of the box's width and height about the last look's box,
    # and the five points averaged over them and the last look (0: the last
    # look's points alone; 2: one diagonal, both ways; 4: both diagonals). One
    # look's points move with where its region happens to sit, a few pixels
    # either way; their mean moves far less, so a face scores against its chip
    # photo nearly the same in whatever frame or crop it came. Off by default:
    # 2 costs about 10 ms a face (40 ms of CPU a Screen) on 2 cores, and the
    # served calibration tables are measured without it; a deployer who turns
    # it on re-runs `verifier eval --calibrate` with it on (README, The gate's
    # camera: what it buys and costs).
    region_jitter_looks: int = Field(default=0, ge=0, le=4, multiple_of=2)
    region_jitter: float = Field(default=0.05, gt=0.0, le=0.25, allow_inf_nan=False)


class PipelineSettings(BaseModel):
    # Add the mirror image's embedding to the face's: a little more accuracy for
    # one more embedder run per face.
    embed_mirror: bool = False
    # Scale of the landmark crop around the detected box.
    landmark_crop_scale: float = 1.0
    # Threads that analyse the probe and the reference image of one Verify side by
    # side (0: one after the other in the request's thread). Two suit two cores.
    image_workers: int = Field(default=2, ge=0)


class MatchingSettings(BaseModel):
    # A pack without a calibration table refuses to start unless this is set:
    # its threshold would not be measured for its models, so serving one is a
    # deliberate choice, never a fallback.
    allow_uncalibrated: bool = False
    # Cosine threshold of a pack served without a calibration table (only with
    # allow_uncalibrated), and the false-match rate claimed for it. Below
    # verifier.calibration.UNCALIBRATED_FLOOR (0.6) the start stops: every pack
    # measured on LFW dev holds FMR 1e-5 at 0.6 (README, Accuracy and Security).
    default_threshold: float = Field(default=0.6, ge=-1.0, le=1.0, allow_inf_nan=False)
    default_threshold_fmr: float = Field(default=1e-5, gt=0.0, lt=1.0, allow_inf_nan=False)
    # The server takes the threshold of the calibration table row for this FMR
    # (the nearest row at or below it: never a laxer one).
    target_fmr: float = Field(default=1e-3, gt=0.0, lt=1.0, allow_inf_nan=False)
    # Tables written by `verifier eval --calibrate`, one per pack: <pack>.json.
    calibration_dir: Path = REPO_ROOT / "models" / "calibration"
    # A table to use instead of calibration_dir/<pack>.json.
    calibration_file: Path | None = None
    # A site's own table (`verifier calibration site`): thresholds from the site's
    # non-mated comparisons, for the same pack, models and operating point. The
    # server decides at the stricter of it and the pack's table, never the laxer.
    site_calibration_file: Path | None = None
    # Drift monitoring (verifier.drift): warn when the one-sided lower bound on the
    # live FMR or FPIR (non-mated outcomes counted in traffic) exceeds this many
    # times its target.
    drift_factor: float = Field(default=2.0, ge=1.0, allow_inf_nan=False)
    # The drift counts (counts per score bin only), kept across restarts;
    # relative: under data_dir. None keeps them in memory only.
    drift_path: Path | None = Path("drift-scores.json")


class EvaluationSettings(BaseModel):
    """How `verifier eval` measures accuracy (ISO/IEC 19795-1 terms)."""

    cache_dir: Path = REPO_ROOT / ".eval-cache"
    output_dir: Path = REPO_ROOT / "benchmarks" / "results" / "eval"
    # Images per model run when embedding a data set.
    batch_size: int = Field(default=32, ge=1)
    # Rows of the score matrix computed at once: bounds memory on large sets.
    chunk_rows: int = Field(default=1024, ge=1)
    fmr_targets: tuple[float, ...] = (1e-2, 1e-3, 1e-4, 1e-5)
    fpir_targets: tuple[float, ...] = (1e-2, 1e-3)
    # Watch-list sizes (templates) the 1:N calibration measures, besides the
    # whole gallery the set allows: random subsets of it, seeded.
    identification_gallery_sizes: tuple[int, ...] = (100, 250, 500)
    confidence: float = Field(default=0.95, gt=0, lt=1)
    # Subject-bootstrap replicates for intervals that respect correlated scores.
    bootstrap_replicates: int = Field(default=1000, ge=0)
    bootstrap_seed: int = 19795


class QualitySettings(BaseModel):
    """Bounds of the face image quality components (verifier.face.quality) a
    live capture must meet before it is decided on, and how the unified score
    mixes the embedder's utility with the rule components."""

    # Inter-eye distance in the image as sent: below min, MOVE_CLOSER.
    min_inter_eye_px: float = Field(default=30.0, gt=0)
    good_inter_eye_px: float = Field(default=90.0, gt=0)
    max_yaw_deg: float = Field(default=30.0, gt=0, le=90)
    max_pitch_deg: float = Field(default=30.0, gt=0, le=90)
    max_roll_deg: float = Field(default=25.0, gt=0, le=90)
    # Variance of the Laplacian of the aligned face's centre: below min, HOLD_STILL.
    min_sharpness: float = Field(default=15.0, ge=0)
    good_sharpness: float = Field(default=300.0, gt=0)
    # Mean grey level (0-255) of the face's centre: outside, TOO_DARK / TOO_BRIGHT.
    min_mean_luminance: float = Field(default=45.0, ge=0, le=255)
    max_mean_luminance: float = Field(default=215.0, ge=0, le=255)
    # Grey levels between the 5th and 95th percentile: below, IMPROVE_LIGHTING.
    min_dynamic_range: float = Field(default=25.0, ge=0, le=255)
    # Distance of the face box from the image edge, in face widths: below, STEP_TO_CENTRE.
    min_frame_margin: float = Field(default=0.0)
    # Distance of the face centre from the image centre, in image sizes.
    max_centre_offset: float = Field(default=0.45, gt=0)
    # Utility percentile (0-100, calibrated per pack) below which LOW_UTILITY.
    min_utility: float = Field(default=5.0, ge=0, le=100)
    # Share of the unified score that is the utility (the rest: the mean of the rule components).
    utility_weight: float = Field(default=0.8, ge=0, le=1)
    # Norm quantiles written by `verifier eval --quality`; default:
    # matching.calibration_dir/<pack>-quality.json.
    calibration_file: Path | None = None


class GateSettings(BaseModel):
    """The gate transaction (Screen, ScreenStream): the policy that turns
    scores into ACCEPT / RETRY / REFER, and the limits of each call.

    Whatever is configured here, a fault or a check that could not be made
    never gives ACCEPT: the kiosk sends the traveller to an officer.
    """

    # Live frames one Screen call may carry.
    max_frames: int = Field(default=5, ge=1, le=32)
    # A second face whose box side is at least this share of the traveller's
    # is close enough to be in the gate with them: MULTIPLE_PEOPLE.
    second_person_ratio: float = Field(default=0.6, gt=0, le=1)
    # Attempts (the request's attempt number, from 1) after which a capture
    # that is still not good enough is referred to an officer instead of retried.
    retry_budget: int = Field(default=3, ge=1)
    # When the watch-lists cannot be searched (loading, store missing or
    # failing): "refer" to an officer, or "retry" (the index may come back
    # within seconds). Never accept.
    watchlist_outage: Literal["refer", "retry"] = "refer"
    # Document-photo replay (verifier.gate.replay): agreement of the gradients'
    # directions between the aligned live crop (as it is and mirrored) and the
    # reference after a homography refinement, both rank-transformed,
    # contrast-normalised and halved, at or above which the live capture is
    # taken to be the chip photo itself. Measured on LFW dev, default pack
    # (README: `python -m benchmarks.replay`): 0.94 flags 4 of 4,414 genuine
    # pairs (0.09 %; 2 of them one photograph twice); the 4th and 5th highest
    # genuine scores are 0.948 and 0.931.
    replay_threshold: float = Field(default=0.94, gt=0, le=1)
    # A display's pixel grid in the live capture (verifier.gate.display): the
    # mean prominence (natural-log magnitude over the surrounding spectrum) of
    # the strongest off-centre peaks of the aligned live crop, at or above
    # which the traveller is referred (LIVE_SHOWS_DISPLAY) whatever the panel
    # shows. Measured on LFW dev (README: `python -m benchmarks.replay`): the
    # highest of 8,828 genuine crops scores 1.71, the 99.9th percentile 1.59.
    display_pattern_threshold: float = Field(default=1.75, gt=0, allow_inf_nan=False)
    # Passive PAD (verifier.face.liveness): the pack's liveness model scores
    # the traveller, and a live probability below this is referred
    # (PRESENTATION_ATTACK_SUSPECTED). None: PAD is off, the default because
    # no model here has a measured APCER (README, Presentation attacks). Set
    # with a pack without a liveness model, the server refuses to start.
    pad_threshold: float | None = Field(default=None, gt=0, lt=1, allow_inf_nan=False)
    # A reference sent as a template cannot be checked for replay: False
    # refers such a traveller (REPLAY_NOT_CHECKED) instead of accepting.
    allow_unchecked_replay: bool = False
    # ECC iterations and convergence of the replay refinement (its coarse
    # level runs a share of them). 30 and 50 gave the same decisions on LFW dev
    # (15,842 replays, 4,414 genuine pairs); 30 costs ~8 % less.
    replay_iterations: int = Field(default=30, ge=1)
    replay_epsilon: float = Field(default=1e-4, gt=0)
    # Answers kept for retried transaction ids (SQLite, relative to data_dir),
    # for this long and at most this many (oldest dropped first).
    transactions_path: Path = Path("gate") / "transactions.sqlite3"
    transaction_retention_seconds: float = Field(default=24 * 3600.0, gt=0)
    max_transactions: int = Field(default=200_000, ge=1)
    # ScreenStream: bounds per stream, and streams open at once (beyond:
    # OVERLOADED). A client silent for frame_timeout_seconds is answered REFER.
    max_stream_frames: int = Field(default=75, ge=1)
    max_stream_bytes: int = Field(default=48 * 1024 * 1024, ge=1024)
    max_stream_seconds: float = Field(default=8.0, gt=0)
    frame_timeout_seconds: float = Field(default=2.0, gt=0)
    max_streams: int = Field(default=8, ge=1)
    # Static-picture check in a stream: frames tracked over at least this
    # span whose aligned face crops all still agree, by the replay measure, at
    # or above static_ncc_threshold with the first moved only rigidly (a photo or a
    # screen held up): PRESENTATION_ATTACK_SUSPECTED. A picture passes as live
    # only where one comparison falls below the threshold, so fewer frames give
    # an attack fewer chances and a traveller who keeps still more referrals
    # (the safe side); 3 frames (200 ms at 10 a second) let a walk-through
    # decide on its first good frame.
    motion_min_frames: int = Field(default=3, ge=2)
    # The traveller's face in one frame continues the track of the last when
    # its centre moved at most this many face sides (else the track restarts).
    track_reach: float = Field(default=1.0, gt=0)
    static_ncc_threshold: float = Field(default=0.93, gt=0, le=1)

    def transactions_file(self, data_dir: Path) -> Path:
        return data_dir / self.transactions_path


class Settings(BaseSettings):
    """The whole configuration; build it with :func:`get_settings`."""

    model_config = SettingsConfigDict(env_prefix="VERIFIER_", env_nested_delimiter="__")

    data_dir: Path = REPO_ROOT / "data"
    models: ModelSettings = ModelSettings()
    imaging: ImagingSettings = ImagingSettings()
    detector: DetectorSettings = DetectorSettings()
    pipeline: PipelineSettings = PipelineSettings()
    matching: MatchingSettings = MatchingSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    server: ServerSettings = ServerSettings()
    watchlist: WatchlistSettings = WatchlistSettings()
    admission: AdmissionSettings = AdmissionSettings()
    security: SecuritySettings = SecuritySettings()
    audit: AuditSettings = AuditSettings()
    replication: ReplicationSettings = ReplicationSettings()
    bundles: BundleSettings = BundleSettings()
    quality: QualitySettings = QualitySettings()
    gate: GateSettings = GateSettings()
    registry: RegistrySettings = RegistrySettings()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return Settings()
