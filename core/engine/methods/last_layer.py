"""Last-layer retraining (DFR-style): refit only the classifier on counterexamples plus typical images.

Kirichenko, Izmailov and Wilson, "Last Layer Re-Training is Sufficient for Robustness to Spurious
Correlations", ICLR 2023: keep the feature extractor and re-fit the last linear layer on a small
set in which the shortcut does not hold. Here that set is the counterexamples (shortcut pointing
the wrong way, true labels) plus typical unlabelled images (shortcut as usual), for which the
target is the old model's own output, so the new classifier must fit the counterexamples without
giving up the typical decisions:

    L(W) = CE(W·φ(x_ce), y_ce) + μ · KL( softmax(W₀·φ(x_typ)) ‖ softmax(W·φ(x_typ)) )

φ is the frozen network up to the input of its last ``nn.Linear``; W starts at the old classifier
W₀ (a warm start, so at step 0 the model is the old one and the KL term is 0) and is trained with
the shared loop. The second term is reported as the method's penalty. ``params`` does not apply:
only the last linear layer changes, by definition.

Typical images come from the unlabelled set passed to the method (``--unlabeled``, the candidate
pool in the benchmark); without them the method refuses to run, since it would be plain
classifier fine-tuning (``finetune_head``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from core.engine.configs import LastLayerConfig
from core.engine.methods.base import Method, merged_with
from core.errors import UserError
from core.formats.architectures import last_linear


class LastLayer(Method):
    name = "last_layer"

    def __init__(self, base_model, config: LastLayerConfig, device, unlabeled=None):
        super().__init__(base_model, config, device, unlabeled)
        if unlabeled is None or not len(unlabeled):
            raise UserError(
                "last-layer retraining needs typical unlabelled images (pass --unlabeled, e.g. the candidate pool)"
            )
        found = last_linear(self.base)
        if found is None:
            raise UserError("last-layer retraining needs a model whose classifier is a linear layer")
        self.layer_name, base_head = found
        self.head = copy.deepcopy(base_head).to(device)
        for p in self.head.parameters():
            p.requires_grad_(True)
        self._feats: torch.Tensor | None = None
        base_head.register_forward_hook(self._capture)
        with torch.no_grad():
            typ = unlabeled[: config.typical_images].to(device)
            self.typ_target = torch.log_softmax(self.base(typ).float(), dim=1)
            self.typ_feats = self._feats

    def _capture(self, module, inputs, output):
        self._feats = inputs[0].detach()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.base(x)
        return self._feats

    def trainable_parameters(self):
        return list(self.head.parameters())

    def forward(self, x):
        return self.head(self.features(x))

    def penalty(self) -> torch.Tensor:
        if self.config.typical_weight == 0:
            return torch.zeros((), device=self.device)
        logp = torch.log_softmax(self.head(self.typ_feats).float(), dim=1)
        kl = nn.functional.kl_div(logp, self.typ_target, log_target=True, reduction="batchmean")
        return self.config.typical_weight * kl

    @torch.no_grad()
    def merged_state_dict(self):
        prefix = f"{self.layer_name}." if self.layer_name else ""
        return merged_with(self.base, {prefix + k: v for k, v in self.head.state_dict().items()})

    @torch.no_grad()
    def delta_state_dict(self):
        prefix = f"{self.layer_name}." if self.layer_name else ""
        base = dict(self.base.named_parameters())
        return {prefix + k: (v.float() - base[prefix + k].float()).cpu() for k, v in self.head.named_parameters()}
