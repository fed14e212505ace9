"""Images become exactly the tensors the manifest's contracts describe."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from verifier.face.contract import InputContract

CONTRACTS = [
    {"name": "input", "width": 320, "height": 240, "colour": "RGB", "mean": [127.0] * 3, "std": [128.0] * 3},
    {"name": "input", "width": 64, "height": 64, "colour": "GREY", "mean": [0.0], "std": [256.0]},
    {"name": "input", "width": 112, "height": 112, "colour": "RGB", "mean": [127.5] * 3, "std": [128.0] * 3},
    {"name": "input", "width": 128, "height": 128, "colour": "BGR", "mean": [0.0] * 3, "std": [1.0] * 3},
    {"name": "input", "width": 112, "height": 112, "colour": "RGB", "mean": [123.7, 116.3, 103.5],
     "std": [58.4, 57.1, 57.4]},
]


@pytest.mark.parametrize("entry", CONTRACTS, ids=lambda e: f"{e['colour']}-{e['width']}")
def test_tensor_is_channel_ordered_normalised_nchw(entry: dict, photos: dict[str, Path]) -> None:
    contract = InputContract.from_manifest(entry)
    photo = cv2.imread(str(photos["obama.jpg"]))
    crops = [cv2.resize(region, (contract.width, contract.height)) for region in (photo, photo[100:500, 200:600])]
    channels = {"RGB": [2, 1, 0], "BGR": [0, 1, 2]}
    expected = []
    for crop in crops:
        if contract.colour == "GREY":
            planes = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)[None].astype(np.float32)
        else:
            planes = crop[:, :, channels[contract.colour]].transpose(2, 0, 1).astype(np.float32)
        means = np.asarray(entry["mean"], np.float32)[:, None, None]
        stds = np.asarray(entry["std"], np.float32)[:, None, None]
        expected.append((planes - means) / stds)
    assert np.allclose(contract.tensor(crops), np.stack(expected), atol=1e-5)
