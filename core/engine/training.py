"""Training a model from scratch: how the two benchmark suites' biased base models are made.

Only the suite builders use this (``core.app.demo``, ``core.bench.photo_suite``): a repair never trains θ.
The loop is plain minibatch Adam in train mode, seeded through one generator so that a rebuild on
CPU gives the same weights bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def train_classifier(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    seed: int,
    batch_size: int = 64,
    augment: Augment | None = None,
) -> nn.Module:
    """Minibatch Adam on cross-entropy for ``epochs`` passes; returns the model in eval mode."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for start in range(0, len(x), batch_size):
            idx = perm[start : start + batch_size]
            xb = x[idx] if augment is None else augment(x[idx], g)
            loss = nn.functional.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def random_hflip(xb: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Flip each image left-right with probability ½ (photos; digits must not be flipped)."""
    flip = torch.rand(len(xb), generator=g) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), xb.flip(3), xb)
