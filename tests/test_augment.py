"""Augmented copies of the counterexamples (core/engine/augment.py)."""

from __future__ import annotations

import pytest
import torch

from core.engine.augment import Augmenter, augmenter, parse_policy
from core.engine.configs import AUGMENT_POLICIES
from core.errors import UserError


def _batch():
    return torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def test_every_offered_policy_parses_and_none_is_off():
    for p in AUGMENT_POLICIES:
        parse_policy(p)
    assert augmenter("none") is None and parse_policy("crop+flip") == ("crop", "flip")
    with pytest.raises(UserError, match="unknown augmentation"):
        parse_policy("crop+jitter")


def test_copies_keep_the_shape_and_change_the_pixels_reproducibly():
    x = _batch()
    a, b = Augmenter("crop+flip+erase", seed=3), Augmenter("crop+flip+erase", seed=3)
    ya, yb = a(x), b(x)
    assert ya.shape == x.shape and torch.equal(ya, yb)  # the same seed gives the same copies
    assert not torch.equal(ya, x)
    assert not torch.equal(a(x), ya)  # a fresh draw at every call (every step)
    assert torch.equal(x, _batch())  # the input is not modified


def test_flip_only_flips_and_erase_only_blanks():
    x = _batch()
    flipped = Augmenter("flip", seed=1)(x)
    for i in range(len(x)):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(-1))
    erased = Augmenter("erase", seed=1)(x)
    changed = erased != x
    assert changed.any() and (erased[changed] == 0).all()
