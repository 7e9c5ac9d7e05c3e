"""Plain fine-tuning: the baseline the paper compares change-penalized tuning with.

Penzel, Stein and Denzler, VISAPP 2024 (arXiv 2404.12292), §4: fine-tune the pre-trained weights θ
directly on the counterexamples with cross-entropy and no penalty, either every layer or only the
classifier, and either for a fixed budget or with the paper's early-stopping rule (stop once every
counterexample is right and at least ε steps have passed, §3.3).

The four variants differ only in their config defaults, so there is one method, ``finetune``, with
named presets (:data:`core.engine.configs.SPECS`) and one training loop
(:func:`core.engine.repair.train_method`):

* ``finetune``         all layers, ``stop_rule="none"`` (the fixed-budget baseline);
* ``finetune_es``      all layers, ``stop_rule="paper"``;
* ``finetune_head``    the last linear layer only, ``stop_rule="none"``;
* ``finetune_head_es`` the last linear layer only, ``stop_rule="paper"``.

A trainable copy of the frozen base is made (the untuned tensors shared with it), so ``self.base`` keeps θ₀ for the penalised
subclasses (:mod:`core.engine.methods.l2sp`, :mod:`core.engine.methods.mas`) and for the audit delta. The copy
runs in eval mode: BatchNorm statistics stay frozen and dropout is off (docs/DESIGN.md §3).
"""

from __future__ import annotations

import torch

from core.engine.methods.base import Method, select_parameters, trainable_copy


class FineTune(Method):
    """Train θ itself (a copy of the base), the parameters chosen by ``params`` only."""

    name = "finetune"

    def __init__(self, base_model, config, device, unlabeled=None):
        super().__init__(base_model, config, device, unlabeled)
        self.names = select_parameters(self.base, config.params)
        self.model, self._params = trainable_copy(self.base, self.names)
        base = dict(self.base.named_parameters())
        self.anchors = [base[n] for n in self.names]  # θ₀, frozen, aligned with trainable_parameters()

    def trainable_parameters(self):
        return self._params

    def forward(self, x):
        return self.model(x)

    @torch.no_grad()
    def merged_state_dict(self):
        return {k: v.detach().clone().cpu() for k, v in self.model.state_dict().items()}

    @torch.no_grad()
    def delta_state_dict(self):
        return {n: (p.detach().float() - a.float()).cpu() for n, p, a in zip(self.names, self._params, self.anchors)}
