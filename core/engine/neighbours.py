"""A model's own feature space for nearest neighbours: the penultimate features (the input of its last
``nn.Linear``, :func:`core.engine.group_features.embed_blocks` with ``depth=False``). The Counterexamples
page's "More like this" compares them by cosine similarity (:func:`core.app.similar.nearest`) to find images
the model sees as alike (the same shortcut, the same kind of mistake), so a curator can label them next."""

from __future__ import annotations

import numpy as np

from core.engine.group_features import classifier_layer, embed_blocks
from core.engine.inference import normalize
from core.formats.datasets import ImageDataset, iter_pixel_batches
from core.formats.limits import eval_batch_size


def penultimate_features(bundle, data: ImageDataset, device="cpu") -> np.ndarray:
    """The penultimate features ``[N, D]`` (float32) of ``bundle`` for every image of ``data``, streamed
    from disk a batch at a time."""
    meta = bundle.meta
    parts = [
        embed_blocks(bundle.model, normalize(batch, meta.mean, meta.std), device, depth=False)[0]
        for batch in iter_pixel_batches(data, meta.input_size, eval_batch_size())
    ]
    if not parts:
        return np.zeros((0, classifier_layer(bundle.model).in_features), np.float32)
    return np.concatenate(parts).astype(np.float32)
