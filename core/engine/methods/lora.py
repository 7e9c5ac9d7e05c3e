"""LoRA: low-rank, zero-initialised changes to conv and linear weights.

Hu, Shen, Wallis, Allen-Zhu, Li, Wang, Wang and Chen, "LoRA: Low-Rank Adaptation of Large Language
Models", ICLR 2022 (arXiv 2106.09685), Eq. 3: each adapted weight W (out × in) becomes
W + (s/r)·B·A with A (r × in) random and B (out × r) zero, so at step 0 the model is exactly the
base; s is the setting ``scale`` (the paper's α). Convolutions are treated as matrices
(out, in·k·k), as in the penalties of docs/DESIGN.md §3, and the product is reshaped back to the
kernel's shape.

Only weights of ``nn.Conv2d`` and ``nn.Linear`` layers chosen by ``params`` get a pair (biases and
norms stay frozen). The change is rank ≤ r by construction, with no penalty. The result merges
into an ordinary model, θ' = θ + (s/r)·B·A, applied per forward pass with
:func:`torch.func.functional_call` so θ is never touched.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import functional_call

from core.engine.configs import LoRAConfig
from core.engine.methods.base import Method, merged_with, select_parameters
from core.errors import UserError


class LoRA(Method):
    name = "lora"

    def __init__(self, base_model, config: LoRAConfig, device, unlabeled=None):
        super().__init__(base_model, config, device, unlabeled)
        chosen = set(select_parameters(self.base, config.params))
        params = dict(self.base.named_parameters())
        self.names: list[str] = []
        for mod_name, module in self.base.named_modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                wname = f"{mod_name}.weight" if mod_name else "weight"
                if wname in chosen:
                    self.names.append(wname)
        if not self.names:
            raise UserError(f"LoRA: params={config.params!r} selects no conv or linear weight")
        self.anchors = [params[n] for n in self.names]
        self.factor = config.scale / config.rank
        self.A = nn.ParameterList()
        self.B = nn.ParameterList()
        for w in self.anchors:
            out_f, in_f = w.shape[0], int(w[0].numel())
            r = min(config.rank, out_f, in_f)
            a = torch.empty(r, in_f)
            # Kaiming-uniform as in the reference implementation (loralib); B = 0. Drawn from the
            # global generator, which run_repair seeds with the run's seed.
            bound = 1.0 / math.sqrt(in_f)
            a.uniform_(-bound, bound)
            self.A.append(nn.Parameter(a.to(device)))
            self.B.append(nn.Parameter(torch.zeros(out_f, r, device=device)))

    def _deltas(self) -> list[torch.Tensor]:
        return [(b @ a).mul(self.factor).reshape(w.shape) for a, b, w in zip(self.A, self.B, self.anchors)]

    def trainable_parameters(self):
        return [*self.A, *self.B]

    def forward(self, x):
        eff = {n: w + d for n, w, d in zip(self.names, self.anchors, self._deltas())}
        return functional_call(self.base, eff, (x,), strict=False)

    @torch.no_grad()
    def merged_state_dict(self):
        return merged_with(self.base, {n: w + d for n, w, d in zip(self.names, self.anchors, self._deltas())})

    @torch.no_grad()
    def delta_state_dict(self):
        return {n: d.detach().float().cpu() for n, d in zip(self.names, self._deltas())}
