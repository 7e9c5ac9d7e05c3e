"""The old model's answers on a prepared draw's image sets, computed once and shared by everything that needs them.

Within one command the frozen old model is asked the same question several times: a repair's "before" numbers on the
evaluation rows (:mod:`core.engine.repair`), the check-split guard's baseline on the check rows
(:mod:`core.engine.guard`), once per candidate strength when automatic strength runs a guarded repair per λ
(:mod:`core.engine.checkauto`), and once per method when the benchmark runs several methods on one draw
(:mod:`core.bench.benchmark`). Its answers there never change, so :class:`OldAnswers`, held by the
:class:`core.engine.loop.PreparedData` those rows belong to, predicts them the first time and hands the same answers
to every later caller.

What makes an answer the same answer, and so the key of each entry:

* the model, by content: a hash of its class name and of every parameter and buffer (name, dtype, shape and bytes),
  so another model, or this model changed in place, is another key;
* the rows, by identity: the very tensor or :class:`core.engine.inference.DiskImages` object (the entry holds it, so
  its id cannot pass to another object), and for a tensor its in-place version counter, so rows written over in
  place are not the rows that were predicted;
* the device kind (CUDA predicts under bf16 autocast, the CPU in fp32).

A pickled cache (a parallel backend's copy of the prepared data) arrives empty: identity means nothing in another
process.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from core.engine.inference import predict_logits


def model_fingerprint(model: torch.nn.Module) -> str:
    """A hash of ``model``'s class and its whole state (every parameter and buffer: name, dtype, shape, bytes)."""
    h = hashlib.sha1(type(model).__qualname__.encode())
    for name, t in model.state_dict().items():
        t = t.detach()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        if t.numel():
            h.update(memoryview(t.cpu().contiguous().flatten().view(torch.uint8).numpy()))
    return h.hexdigest()


def _version(x) -> int | None:
    return x._version if isinstance(x, torch.Tensor) else None


class OldAnswers:
    """The old model's predicted classes per (model, rows, device kind); see the module docstring."""

    def __init__(self) -> None:
        self._entries: list[tuple[str, object, int | None, str, np.ndarray]] = []
        self.passes = 0  # how many times the old model was actually run over a set of rows

    def classes(self, model: torch.nn.Module, x, device: torch.device) -> np.ndarray:
        """The classes ``model`` predicts for rows ``x`` on ``device`` (as :func:`predict_logits` gives them):
        predicted the first time, the same array every later time. Callers must not write into it."""
        key = model_fingerprint(model)
        for fp, rows, version, kind, answers in self._entries:
            if rows is x and fp == key and version == _version(x) and kind == device.type:
                return answers
        answers = predict_logits(model, x, device).argmax(1).numpy()
        answers.flags.writeable = False
        self._entries.append((key, x, _version(x), device.type, answers))
        self.passes += 1
        return answers

    def __getstate__(self) -> dict:
        return {"_entries": [], "passes": 0}
