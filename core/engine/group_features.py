"""The model's own features for finding groups without labels (docs/DISCOVERY.md).

Per image: for every stage of the network (shallow to deep) the mean and the spatial standard deviation of
each channel (a transformer's stages are its blocks, and the spread is over their tokens), then the penultimate
features (the input of the last ``nn.Linear``), caught with forward
hooks. Early stages keep the colour and texture a shortcut is often made of; the last layer may have
folded them into the class evidence. No extra model, nothing downloaded. :mod:`core.engine.group_discovery`
clusters them.
"""

from __future__ import annotations

import numpy as np
import torch

from core.engine.devices import select_device
from core.engine.inference import normalize
from core.errors import UserError
from core.formats.architectures import last_linear
from core.formats.datasets import ImageDataset, iter_pixel_batches
from core.formats.limits import eval_batch_size


def classifier_layer(model: torch.nn.Module) -> torch.nn.Linear:
    """The model's last ``nn.Linear``: its classifier head, whose input are the penultimate features."""
    head = last_linear(model)
    if head is None:
        raise UserError("the model has no linear classifier layer, so its features cannot be read")
    return head[1]


def _tensor_of(out) -> torch.Tensor | None:
    """A module's output tensor (a transformers layer may return a tuple whose first item it is)."""
    if isinstance(out, tuple) and out:
        out = out[0]
    return out if isinstance(out, torch.Tensor) else None


def _token_blocks(calls: list[tuple[str, tuple, torch.Tensor]], model: torch.nn.Module) -> list[tuple[str, tuple]]:
    """A transformer's blocks: the children of the module list (or sequence) with the most children
    that each output tokens ``[B, T, D]`` of one shape (timm's ``blocks.0``…, transformers'
    ``vit.encoder.layer.0``…). Empty for a network without such a list (a CNN)."""
    tokens = {name: shape for name, shape, _ in calls if len(shape) == 2}
    best: list[tuple[str, tuple]] = []
    for name, module in model.named_modules():
        if not isinstance(module, (torch.nn.ModuleList, torch.nn.Sequential)) or len(module) < 1:
            continue
        children = [f"{name}.{i}" if name else str(i) for i in range(len(module))]
        shapes = {tokens.get(c) for c in children}
        if None not in shapes and len(shapes) == 1 and len(children) > len(best):
            best = [(c, tokens[c]) for c in children]
    return best


def _stage_modules(model: torch.nn.Module, x: torch.Tensor, head: torch.nn.Linear) -> list[tuple[str, tuple]]:
    """The modules whose outputs are the model's *stages*, found from one probe image, as (name, output
    shape without the batch). Feature maps ``[B, C, H, W]``: for each spatial size, the shallowest module
    (fewest dots in its name) that produces it, the last one to finish if several do (a ResNet's
    ``layer1``, a MobileNet's ``features.3``, the SmallCNN's ``features.1``); sizes of one pixel (already
    pooled) and a stage whose output is the classifier's input itself (the SmallCNN's 3×3 pool) are left
    out: the penultimate features are added separately. Tokens ``[B, T, D]``: every block of a
    transformer (:func:`_token_blocks`); maps made inside a block (attention's per-head queries and keys
    are 4-D too) are no stages."""
    calls: list[tuple[str, tuple, torch.Tensor]] = []
    head_in: list[torch.Tensor] = []

    def record(name: str):
        def hook(_m, _i, out):
            out = _tensor_of(out)
            if out is not None and out.dim() in (3, 4):
                calls.append((name, tuple(out.shape[1:]), out.detach().flatten().clone()))

        return hook

    hooks = [m.register_forward_hook(record(name)) for name, m in model.named_modules() if name]
    hooks.append(head.register_forward_hook(lambda _m, inp, _o: head_in.append(inp[0].detach().flatten().clone())))
    try:
        model(x[:1])
    finally:
        for h in hooks:
            h.remove()
    blocks = _token_blocks(calls, model)
    inside = tuple(name + "." for name, _ in blocks)
    best: dict[tuple, tuple[int, str, tuple, torch.Tensor]] = {}
    for name, shape, value in calls:
        depth = name.count(".")
        if len(shape) == 3 and not name.startswith(inside) and (shape[1:] not in best or depth <= best[shape[1:]][0]):
            best[shape[1:]] = (depth, name, shape, value)
    order = {name: i for i, (name, _, _) in enumerate(calls)}

    def is_head_input(value: torch.Tensor) -> bool:
        return bool(head_in) and value.numel() == head_in[-1].numel() and torch.equal(value, head_in[-1])

    maps = [
        (name, shape) for _, name, shape, value in best.values() if shape[1] * shape[2] > 1 and not is_head_input(value)
    ]
    return sorted(maps + blocks, key=lambda s: order[s[0]])


def _channels(shape: tuple) -> int:
    """A stage's channels: C of a map ``(C, H, W)``, D of tokens ``(T, D)``."""
    return shape[0] if len(shape) == 3 else shape[1]


@torch.inference_mode()
def embed_blocks(
    model: torch.nn.Module, x: torch.Tensor, device="cpu", batch_size: int = 256, depth: bool = True, stages=None
):
    """Discovery features, softmax probabilities and the widths of the feature blocks.

    The features are, per image: for every stage of the network (:func:`_stage_modules`, shallow
    to deep) the mean and the standard deviation over space of each channel, then the penultimate
    features (the classifier's input, caught with a forward hook). Earlier stages keep colour and
    texture that the last layer may have folded into the class evidence; that is what a shortcut
    is often made of. ``depth=False``: the penultimate features only. Returns float32 numpy arrays
    ``[N, D]`` and ``[N, C]`` and a tuple of block widths summing to ``D`` (one block per stage,
    the penultimate features last). ``stages``: the model's stages found earlier (:func:`_stage_modules`,
    for a dataset embedded a batch at a time); ``None``: found here from the first image."""
    dev = select_device(device) if isinstance(device, str) else device
    head = classifier_layer(model)
    model.eval().to(dev)
    if stages is None:
        stages = _stage_modules(model, x[:1].to(dev), head) if depth and len(x) else []
    modules = dict(model.named_modules())
    caught: dict[str, torch.Tensor] = {}

    def keep(name: str, shape: tuple):
        def hook(_m, _i, out):
            out = _tensor_of(out)
            if out is not None and tuple(out.shape[1:]) == shape:
                # channels first, positions last: a map's pixels, or a transformer block's tokens
                o = out.detach().float().flatten(2) if len(shape) == 3 else out.detach().float().transpose(1, 2)
                mean = o.mean(2)
                # the spatial (sample) standard deviation; two passes: faster than Tensor.std on CPU
                d = o - mean.unsqueeze(2)
                std = (d * d).sum(2).div_(max(o.shape[2] - 1, 1)).sqrt_()
                caught[name] = torch.cat([mean, std], 1).cpu()

        return hook

    hooks = [modules[name].register_forward_hook(keep(name, shape)) for name, shape in stages]
    hooks.append(
        head.register_forward_hook(
            lambda _m, inp, _out: caught.__setitem__("", inp[0].detach().float().flatten(1).cpu())
        )
    )
    widths = tuple(2 * _channels(shape) for _, shape in stages) + (head.in_features,)
    feats, probs = [], []
    try:
        for start in range(0, len(x), batch_size):
            caught.clear()
            logits = model(x[start : start + batch_size].to(dev)).float().cpu()
            feats.append(torch.cat([caught[name] for name, _ in stages] + [caught[""]], 1))
            probs.append(torch.softmax(logits, dim=1))
    finally:
        for h in hooks:
            h.remove()
        model.to("cpu")
    if not feats:
        return np.zeros((0, sum(widths)), np.float32), np.zeros((0, head.out_features), np.float32), widths
    return torch.cat(feats).numpy(), torch.cat(probs).numpy(), widths


def embed_tensor(model: torch.nn.Module, x: torch.Tensor, device="cpu", batch_size: int = 256):
    """Discovery features (:func:`embed_blocks`) and softmax probabilities for a normalised tensor,
    as float32 numpy arrays ``[N, D]`` and ``[N, C]``."""
    feats, probs, _ = embed_blocks(model, x, device, batch_size)
    return feats, probs


def embed_with_blocks(bundle, data, device="cpu", pixels: np.ndarray | None = None):
    """:func:`embed` plus the feature blocks' widths (see :func:`embed_blocks`)."""
    meta = bundle.meta
    if isinstance(data, ImageDataset) and pixels is None and len(data):
        parts, stages = [], None
        for batch in iter_pixel_batches(data, meta.input_size, eval_batch_size()):
            x = normalize(batch, meta.mean, meta.std)
            if stages is None:  # found once from the first image, not again for every batch
                dev = select_device(device) if isinstance(device, str) else device
                stages = _stage_modules(bundle.model.eval().to(dev), x[:1].to(dev), classifier_layer(bundle.model))
            parts.append(embed_blocks(bundle.model, x, device, stages=stages))
        return np.concatenate([f for f, _, _ in parts]), np.concatenate([p for _, p, _ in parts]), parts[0][2]
    if isinstance(data, ImageDataset):
        if pixels is None:
            pixels = np.zeros((0, *meta.input_size), np.uint8)
        x = normalize(pixels, meta.mean, meta.std)
    elif isinstance(data, np.ndarray) or (isinstance(data, torch.Tensor) and data.dtype == torch.uint8):
        x = normalize(data, meta.mean, meta.std)
    else:
        x = data
    return embed_blocks(bundle.model, x, device)


def embed(bundle, data, device="cpu", pixels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Discovery features and probabilities of ``bundle`` for an :class:`ImageDataset` (or uint8
    pixels ``[N,C,H,W]``, or an already normalised float tensor). A dataset without ``pixels`` is
    streamed from disk a batch at a time (``BIASREPAIR_EVAL_BATCH``), so only its features stay in
    memory."""
    feats, probs, _ = embed_with_blocks(bundle, data, device, pixels)
    return feats, probs
