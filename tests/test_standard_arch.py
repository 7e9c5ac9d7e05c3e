"""A real torchvision architecture end to end through the CLI: default CPT does no harm.

MobileNetV3-small (BatchNorm, dropout, squeeze-and-excitation) is trained here from scratch for a
few epochs on 800 tagged MNIST digits at 32 px, the tag agreeing with the digit's half in 99 % of
them, like the demo. Then ``python -m core tune`` runs with default settings on 4 tag-conflicting
counterexamples; the repaired model must not be worse than the old one on an unbiased evaluation
set (at most one point of accuracy lost, at least 95 % of right decisions kept).
"""

from __future__ import annotations

import json

import numpy as np
import torch

from core.cli import main
from core.formats.bundle import BundleMeta, save_bundle
from core.formats.datasets import write_manifest_dataset

SIZE = 32


def _digits(n: int, offset: int):
    from core.app import demo

    images, labels = demo.read_mnist_train_5k()  # sorted by class: take a fixed shuffle
    idx = np.random.default_rng(5).permutation(len(labels))[offset : offset + n]
    pad = np.zeros((n, SIZE, SIZE), dtype=np.uint8)
    pad[:, 2:30, 2:30] = images[idx]
    return pad, labels[idx]


def _tagged(gray, colours):
    from core.app import demo

    return demo.add_tags(gray, colours)


def test_default_cpt_does_no_harm_on_mobilenet(tmp_path):
    from core.app import demo
    from core.engine.inference import normalize
    from core.engine.training import train_classifier
    from core.formats.architectures import build_model

    rng = np.random.default_rng(0)
    meta = BundleMeta("mobilenet_v3_small", 10, demo.CLASS_NAMES, [3, SIZE, SIZE], demo.MEAN, demo.STD)
    gray, y = _digits(800, 0)
    rgb = _tagged(gray, demo.biased_colours(y, 0.99, rng))
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = build_model("mobilenet_v3_small", 10).train()
        x = normalize(rgb.transpose(0, 3, 1, 2), meta.mean, meta.std)
        train_classifier(model, x, torch.from_numpy(y), epochs=10, lr=5e-3, seed=0)
        # torchvision's MobileNetV3 uses BatchNorm momentum 0.01, too slow for 130 steps: recompute the
        # running statistics over the training images (cumulative average), as one would after short training.
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.reset_running_stats()
                mod.momentum = None
        model.train()
        with torch.no_grad():
            for i in range(0, len(x), 100):
                model(x[i : i + 100])
        model.eval()
    finally:
        torch.set_num_threads(threads)
    save_bundle(model.state_dict(), meta, tmp_path / "model")

    names = demo.CLASS_NAMES
    eg, ey = _digits(300, 1000)
    ecol = rng.integers(0, 2, size=len(ey))
    write_manifest_dataset(
        tmp_path / "eval", _tagged(eg, ecol), [names[i] for i in ey], [demo.COLOUR_NAMES[c] for c in ecol]
    )
    cg, cy = _digits(4, 2000)
    ccol = 1 - demo.CLASS_TAG[cy]
    write_manifest_dataset(tmp_path / "ce", _tagged(cg, ccol), [names[i] for i in cy])
    rg, ry = _digits(200, 3000)
    write_manifest_dataset(tmp_path / "ref", _tagged(rg, demo.biased_colours(ry, 0.99, rng)), [names[0]] * len(ry))

    code = main(
        [
            "tune",
            "--model", str(tmp_path / "model"),
            "--counterexamples", str(tmp_path / "ce"),
            "--eval", str(tmp_path / "eval"),
            "--reference", str(tmp_path / "ref"),
            "--device", "cpu",
            "--out", str(tmp_path / "run"),
            "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["before"]["accuracy"] > 0.3  # the base learned something real
    assert m["after"]["accuracy"] >= m["before"]["accuracy"] - 0.01
    assert m["kept_decisions"] >= 0.95
    assert m["reference_agreement"] is None or m["reference_agreement"] >= m["config"]["keep_floor"]
