"""The function-space anchor and the label-free kept estimate, on unlabelled *reference* images.

A weight penalty λ·P(δ) says "change the weights little"; it does not say "keep the answers". On
networks with BatchNorm and millions of weights a small relative δ can still flip many decisions,
and Adam's first steps move every weight by about its step size whatever the penalty. The anchor
adds the missing statement in the space of outputs:

    L(δ) = CE(f_{θ+δ}(x), y) + λ·P(δ) + μ · KL( p_θ(x_u) ‖ p_{θ+δ}(x_u) )

with x_u a minibatch of unlabelled reference images, p the softmax, and the frozen model's
probabilities p_θ(x_u) computed once. It is exactly 0 at δ = 0 (where θ + δ = θ) and its gradient
reaches δ through f_{θ+δ}. It uses no labels of the reference images.

Which images: *typical* inputs, the kind the model meets in use (their behaviour should be kept),
never the counterexample pool (full of images whose answer should change) and never the rows the
reported numbers are computed on. The same images give a label-free estimate of kept decisions:
the share of reference images whose predicted class is unchanged (:meth:`Reference.agreement`),
which is 1.0 at δ = 0.

Typical images can still include the very mistakes the repair should fix (a deployment photo with the shortcut's
cue on the wrong class); :func:`far_from` finds the share of them most like a counterexample in the old model's own
features, for the anchor to leave out (CPT's ``anchor_skip``; the kept estimate still uses every image), and
:func:`confidence_weights` lets the anchor hold the old model's confident answers harder than its unsure ones
(``anchor_confidence``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from core.engine.inference import GPU_BATCH, forward_batch, rows_on
from core.formats.architectures import last_linear

AGREEMENT_IMAGES = 256  # images in the fixed subset the kept estimate is measured on


def anchor_kl(
    new_logits: torch.Tensor, old_log_probs: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean over the batch of KL(p_old ‖ p_new) = Σ p_old·(log p_old − log p_new), each image's term times its
    ``weights`` entry where given (:func:`confidence_weights`)."""
    new_log_probs = nn.functional.log_softmax(new_logits.float(), dim=1)
    per_image = (old_log_probs.exp() * (old_log_probs - new_log_probs)).sum(1)
    return (per_image if weights is None else per_image * weights).mean()


def confidence_weights(old_log_probs: torch.Tensor, power: float, norm: float) -> torch.Tensor:
    """Each image's weight in the anchor: the old model's confidence in its own answer, max p_old, raised to
    ``power`` and divided by ``norm`` (that power's mean over the reference images, so the weights average 1 and
    μ keeps its meaning). Confident old answers, likely right, are held; unsure ones, where a shortcut's mistakes
    are more likely, may move."""
    return old_log_probs.exp().max(1).values.pow(power) / norm


@torch.no_grad()
def features(model: nn.Module, x, device: torch.device, step: int | None = None) -> torch.Tensor:
    """The model's penultimate features of ``x`` (the input of its last ``nn.Linear``), or its outputs when it
    has no linear layer; ``[N, D]`` float32 on the CPU."""
    head, caught = last_linear(model), []
    step = step or forward_batch(tuple(x.shape[1:]), device)
    hook = None
    if head is not None:
        hook = head[1].register_forward_hook(lambda _m, inp, _o: caught.append(inp[0].float().flatten(1).cpu()))
    try:
        outs = [model(rows_on(x, slice(i, i + step), device)).float().cpu() for i in range(0, len(x), step)]
    finally:
        if hook is not None:
            hook.remove()
    return torch.cat(caught if head is not None else outs)


def far_from(model: nn.Module, x, counterexamples, share: float, device: torch.device) -> torch.Tensor:
    """The reference images the anchor keeps: all but the ``share`` whose features are nearest (cosine, the
    most similar counterexample) to a counterexample, so that the anchor does not hold the answers the repair
    should change. Sorted indices into ``x``."""
    ref = nn.functional.normalize(features(model, x, device), dim=1)
    ce = nn.functional.normalize(features(model, counterexamples, device), dim=1)
    nearest = (ref @ ce.T).max(1).values
    drop = min(round(share * len(ref)), len(ref) - 1)
    return nearest.argsort()[: len(ref) - drop].sort().values


class Reference:
    """Reference images with the frozen model's answers, for the anchor and the kept estimate.
    ``anchor_rows``: the images the anchor's minibatches are drawn from (None: all; :func:`far_from`)."""

    def __init__(self, x: torch.Tensor, base: nn.Module, device: torch.device, seed: int = 0):
        self.x = x
        self.device = device
        # images read at once: a forward pass's batch (DiskImages: at most its own batch)
        self.step = min(forward_batch(tuple(x.shape[1:]), device), getattr(x, "batch", GPU_BATCH))
        self.seed = seed
        self.anchor_rows: torch.Tensor | None = None
        self.restart()
        with torch.no_grad():
            logps = [
                nn.functional.log_softmax(base(rows_on(x, slice(i, i + self.step), device)).float(), 1).cpu()
                for i in range(0, len(x), self.step)
            ]
        self.old_log_probs = torch.cat(logps)
        self.old_pred = self.old_log_probs.argmax(1)
        pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(99))[:AGREEMENT_IMAGES]
        self.check_idx = pick.sort().values

    def restart(self) -> None:
        """Start the minibatch stream again: automatic strength gives every trial run the same stream, so a
        trial's result does not depend on which trials ran before it (or in which process)."""
        self.gen = torch.Generator().manual_seed(10_007 + self.seed)

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A random minibatch of reference images and the frozen model's log-probabilities on them."""
        if self.anchor_rows is None:
            idx = torch.randperm(len(self.x), generator=self.gen)[:size]
        else:
            idx = self.anchor_rows[torch.randperm(len(self.anchor_rows), generator=self.gen)[:size]]
        return rows_on(self.x, idx, self.device), self.old_log_probs[idx].to(self.device)

    @torch.no_grad()
    def agreement(self, predict: Callable[[torch.Tensor], torch.Tensor]) -> float:
        """Share of the fixed check subset whose predicted class equals the frozen model's."""
        idx = self.check_idx
        pred = torch.cat(
            [
                predict(rows_on(self.x, idx[i : i + self.step], self.device)).argmax(1).cpu()
                for i in range(0, len(idx), self.step)
            ]
        )
        return float((pred == self.old_pred[self.check_idx]).float().mean())
