"""CutMix between counterexamples and reference images (core/engine/mixing.py)."""

from __future__ import annotations

import torch

from core.engine.mixing import cutmix, soft_cross_entropy


def test_composites_paste_an_aligned_box_and_mix_the_labels_by_its_area():
    g = torch.Generator().manual_seed(0)
    x_ref = torch.zeros(32, 1, 10, 10)
    x_ce = torch.ones(3, 1, 10, 10) * torch.arange(1, 4).view(3, 1, 1, 1)  # counterexample i is filled with i + 1
    y_ce = torch.tensor([0, 1, 2])
    p_ref = torch.full((32, 3), 1 / 3)
    x, q = cutmix(x_ref, p_ref, x_ce, y_ce, g)
    assert torch.allclose(q.sum(1), torch.ones(32))
    for i in range(32):
        pasted = x[i] != 0
        share = float(pasted.float().mean())
        assert 0.05 <= share <= 0.6
        src = int(x[i][pasted][0]) - 1  # which counterexample the box came from
        assert (x[i][pasted] == src + 1).all()
        expected = torch.full((3,), (1 - share) / 3)
        expected[src] += share
        assert torch.allclose(q[i], expected, atol=1e-6)
        rows, cols = torch.nonzero(pasted[0], as_tuple=True)
        assert share == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1) / 100  # one rectangle


def test_soft_cross_entropy_equals_cross_entropy_for_one_hot_targets():
    logits = torch.randn(5, 4)
    y = torch.tensor([0, 3, 1, 2, 2])
    onehot = torch.nn.functional.one_hot(y, 4).float()
    assert torch.allclose(soft_cross_entropy(logits, onehot), torch.nn.functional.cross_entropy(logits, y))
