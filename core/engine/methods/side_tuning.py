"""Side-tuning: leave the base alone and learn a side network blended into its output.

Zhang, Sax, Zamir, Guibas and Malik, "Side-Tuning: A Baseline for Network Adaptation via Additive
Side Networks", ECCV 2020, Eq. 1: R(x) = w · B(x) + (1 − w) · S(x) (their α), with the base B frozen
and only the side network S trained. The base's weight w is either fixed or annealed from 1 towards
``base_weight`` (their curriculum, §3; the setting ``blend``): at w = 1 the output is exactly the
base's, so the repair starts from the old model; as w falls the side network takes over part of the
decision.

The blend is taken on logits. ``side`` chooses S:

* ``small`` (default): a small two-conv network (conv-ReLU ×2, global average pool, linear),
  randomly initialised, as in the paper's lightweight side networks;
* ``copy``: a trainable copy of the base (the paper's "initialise the side from the base"
  variant); ``params`` then chooses which of its weights train.

The result is *not* an ordinary model of the base architecture (it is two networks), so
``mergeable = False``: it cannot be exported as a single bundle and has no weight delta.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from core.engine.configs import SideTuningConfig
from core.engine.methods.base import Method, select_parameters
from core.errors import UserError
from core.formats.architectures import classifier_out_features


def small_side_network(in_channels: int, num_classes: int, width: int) -> nn.Module:
    """conv(s2)-ReLU-conv(s2)-ReLU-global pool-linear: a lightweight S for any image size."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width // 2, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(width // 2, width, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, num_classes),
    )


def _input_channels(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise UserError("side-tuning needs a convolutional base model (no Conv2d layer found)")


class SideTuning(Method):
    name = "side_tuning"

    def __init__(self, base_model, config: SideTuningConfig, device, unlabeled=None):
        super().__init__(base_model, config, device, unlabeled)
        if config.side == "copy":
            self.side = copy.deepcopy(self.base)
            chosen = set(select_parameters(self.side, config.params))
            for n, p in self.side.named_parameters():
                p.requires_grad_(n in chosen)
        else:
            num_classes = classifier_out_features(self.base)
            if num_classes is None:
                raise UserError("side-tuning needs a base model whose last layer is linear")
            # Initialised from the global generator, which run_repair seeds with the run's seed.
            self.side = small_side_network(_input_channels(self.base), num_classes, config.side_width)
        self.side = self.side.to(device).eval()
        self.steps_done = 0
        self._training_weight: float | None = None  # the base's weight while a step trains

    def base_weight(self, step: int | None = None) -> float:
        """The base's weight w after ``step`` updates (the current one by default)."""
        t = self.steps_done if step is None else step
        cfg = self.config
        if cfg.blend == "fixed":
            return cfg.base_weight
        return cfg.base_weight + (1.0 - cfg.base_weight) * max(0.0, 1.0 - t / cfg.anneal_steps)

    def trainable_parameters(self):
        return [p for p in self.side.parameters() if p.requires_grad]

    def forward(self, x):
        w = self._training_weight if self._training_weight is not None else self.base_weight()
        if w >= 1.0:
            return self.base(x)  # exactly the old model
        return w * self.base(x) + (1.0 - w) * self.side(x)

    def update(self, x, y):
        # The step trains the model as it will be after this step (w_{t+1}); at w = 1 the side
        # network would get no gradient at all.
        self._training_weight = self.base_weight(self.steps_done + 1)
        try:
            stats = super().update(x, y)
        finally:
            self._training_weight = None
        self.steps_done += 1
        return stats

    def snapshot(self):
        return [*super().snapshot(), torch.tensor(float(self.steps_done))]

    @torch.no_grad()
    def restore(self, snap):
        super().restore(snap[:-1])
        self.steps_done = int(snap[-1])

    def merged_state_dict(self):
        return None

    def delta_state_dict(self):
        return None
