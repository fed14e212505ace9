"""Gate-like images cut around the face of real photos."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from benchmarks.samples import CAPTURE_SIZE, CHIP_SIZE, CHIP_TARGET_BYTES, gate_pairs
from verifier.pipeline import FaceEngine


def test_frames_and_chips_keep_the_face_and_the_chip_lands_near_20_kb(
    engine: FaceEngine, photos: dict[str, Path]
) -> None:
    names = ["obama.jpg", "obama2.jpg", "obama3.jpg"]
    data = {name: photos[name].read_bytes() for name in names}
    boxes = {name: tuple(float(v) for v in engine.analyse(data[name]).face.box) for name in names}
    pairs = gate_pairs(data, boxes, {"obama": names})
    assert [(p.probe_name, p.chip_name) for p in pairs] == list(zip(names, names[1:] + names[:1]))
    for pair in pairs:
        assert Image.open(io.BytesIO(pair.probe)).size == CAPTURE_SIZE
        assert Image.open(io.BytesIO(pair.chip)).size == CHIP_SIZE
        assert 0.85 * CHIP_TARGET_BYTES <= len(pair.chip) <= CHIP_TARGET_BYTES
        probe, chip = engine.analyse(pair.probe), engine.analyse(pair.chip)
        # The whole face is inside each frame, and the chip's face fills most of its height.
        assert probe.faces_detected == 1 and probe.face.box[1] >= 0
        assert (chip.face.box[3] - chip.face.box[1]) > 0.5 * CHIP_SIZE[1]
        assert float(probe.template.vector @ chip.template.vector) > 0.6
