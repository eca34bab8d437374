"""Fine-tuning starts from a shipped model: its ONNX weights load back into the network exactly.

Needs the ``train`` extra (torch, onnx); without it these tests skip and say so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch", reason="the train extra (torch) is not installed: pip install -e '.[train]'")
pytest.importorskip("onnx", reason="the train extra (onnx) is not installed: pip install -e '.[train]'")

from models.tiny_yolo import TinyYolo  # noqa: E402
from models.train import INPUT_HW, export, load_onnx_weights  # noqa: E402
from simulator.xray import THREAT_CLASSES  # noqa: E402
from station.kernel.detector import DEFAULT_MODEL  # noqa: E402

DEFAULT = DEFAULT_MODEL / "model.onnx"


def _outputs(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]


def test_the_shipped_model_loads_back_and_exports_the_same_outputs(tmp_path: Path) -> None:
    model = TinyYolo(len(THREAT_CLASSES), 32)
    load_onnx_weights(model, DEFAULT)
    export(model.eval(), tmp_path / "again.onnx")
    x = np.random.default_rng(0).random((1, 3, *INPUT_HW), dtype=np.float32)
    assert np.abs(_outputs(tmp_path / "again.onnx", x) - _outputs(DEFAULT, x)).max() < 1e-4


def test_a_model_of_another_width_is_refused_naming_the_layer() -> None:
    with pytest.raises(ValueError, match=r"model\.onnx: /stem/.*Conv has weights \(16, 3, 3, 3\), stem\.0\.0 needs \(20, 3, 3, 3\)"):
        load_onnx_weights(TinyYolo(len(THREAT_CLASSES), 40), DEFAULT)


def test_fine_tuning_from_onnx_keeps_the_folded_norms_frozen_through_a_resumed_checkpoint(tmp_path: Path) -> None:
    """The norms folded into the shipped convolutions are identities: batch statistics must not
    overwrite them, neither in the run that starts from the ONNX file nor in one resumed from its
    checkpoint (a bare state_dict would not say they are frozen)."""
    from models.train import train

    checkpoint = tmp_path / "ft.pt"
    train(seed=3, steps=2, batch=2, init=DEFAULT, checkpoint=checkpoint)
    saved = torch.load(checkpoint, map_location="cpu")
    assert saved["frozen_norms"] is True
    train(seed=4, steps=2, batch=2, init=checkpoint, checkpoint=checkpoint)
    resumed = torch.load(checkpoint, map_location="cpu")
    assert resumed["frozen_norms"] is True
    means = [v for k, v in resumed["state_dict"].items() if k.endswith("running_mean")]
    assert means and all(float(m.abs().max()) == 0.0 for m in means)
