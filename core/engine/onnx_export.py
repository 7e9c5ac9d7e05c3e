"""A model as ONNX, checked after export with onnxruntime against PyTorch (docs/FORMATS.md).

The graph takes ``pixel_values`` ``[batch, C, H, W]`` (normalised as the model's metadata says) and gives
``logits`` ``[batch, classes]``; the batch axis is dynamic. It is written by PyTorch's TorchScript-based
exporter at a stated opset, then run by onnxruntime on the CPU on the images given (the evaluation images),
and the largest difference of a logit and the number of images whose answer differs are returned with it.
A graph that fails the check is deleted: nothing is handed on that does not answer as the model does.
"""

from __future__ import annotations

import warnings
from copy import deepcopy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.engine.inference import predict_logits, rows_on
from core.engine.onnx_check import OPSET, OnnxCheck
from core.errors import UserError


def _averaging(n: int, o: int) -> torch.Tensor:
    """The [o, n] matrix of PyTorch's adaptive average pooling along one axis: row i averages inputs
    floor(i·n/o) to ceil((i+1)·n/o)."""
    m = torch.zeros(o, n)
    for i in range(o):
        a, b = (i * n) // o, -(-(i + 1) * n // o)
        m[i, a:b] = 1.0 / (b - a)
    return m


class AveragingMatrices(nn.Module):
    """An adaptive average pool for one input size, as two matrix products: the same averages, in a form
    the ONNX exporter takes when the output size does not divide the input size (the demo's CNN)."""

    def __init__(self, size_in: tuple[int, int], size_out: tuple[int, int]):
        super().__init__()
        self.register_buffer("rows", _averaging(size_in[0], size_out[0]))
        self.register_buffer("cols", _averaging(size_in[1], size_out[1]).T.contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rows @ x @ self.cols


def exportable(model: nn.Module, input_size: list[int]) -> nn.Module:
    """``model``, or a copy of it whose adaptive average pools that the exporter refuses are
    :class:`AveragingMatrices` for the input size the model takes (the check compares with the original)."""
    pools = {name: m for name, m in model.named_modules() if isinstance(m, nn.AdaptiveAvgPool2d)}
    sizes: dict[str, tuple] = {}
    hooks = [
        m.register_forward_hook(lambda _m, inp, out, n=name: sizes.__setitem__(n, (inp[0].shape[-2:], out.shape[-2:])))
        for name, m in pools.items()
    ]
    with torch.no_grad():
        model(torch.zeros(1, *input_size))
    for h in hooks:
        h.remove()
    odd = {n: s for n, s in sizes.items() if any(i % o for i, o in zip(*s))}
    if not odd:
        return model
    copy = deepcopy(model)
    for name, (size_in, size_out) in odd.items():
        copy.set_submodule(name, AveragingMatrices(tuple(size_in), tuple(size_out)))
    return copy


def export_onnx(model: torch.nn.Module, input_size: list[int], out: Path, opset: int = OPSET) -> Path:
    """Write ``model`` (eval mode, CPU) as one ONNX file with its weights inside."""
    model = exportable(model.eval().to("cpu"), input_size)
    example = torch.zeros(1, *input_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes
        try:
            torch.onnx.export(
                model, (example,), str(out), dynamo=False, opset_version=opset, input_names=["pixel_values"],
                output_names=["logits"], dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
            )  # fmt: skip
        except (RuntimeError, torch.onnx.errors.OnnxExporterError) as exc:
            detail = " ".join(str(exc).split())[:300]
            msg = f"the model cannot be exported as ONNX opset {opset}: {detail}"
            raise UserError(msg, "onnx_failed", opset=opset, detail=detail) from None
    return out


def check_onnx(path: Path, model: torch.nn.Module, x, opset: int, images: bool, batch: int = 64) -> OnnxCheck:
    """Run the exported graph with onnxruntime and the model with PyTorch on ``x`` (normalised inputs: a
    tensor or :class:`core.engine.inference.DiskImages`), ``batch`` at a time, and compare."""
    import onnx  # only for an ONNX export
    import onnxruntime

    onnx.checker.check_model(str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = predict_logits(model.eval().to("cpu"), x, torch.device("cpu"), batch_size=batch).numpy()
    parts = [session.run(["logits"], {"pixel_values": _rows(x, i, batch)})[0] for i in range(0, len(x), batch)]
    got = np.concatenate(parts) if parts else want
    diff = float(np.abs(got - want).max()) if len(x) else 0.0
    differ = int((got.argmax(1) != want.argmax(1)).sum()) if len(x) else 0
    return OnnxCheck(opset, len(x), images, diff, differ, onnxruntime.__version__)


def _rows(x, start: int, batch: int) -> np.ndarray:
    return rows_on(x, slice(start, start + batch), torch.device("cpu")).float().numpy()


def export_checked(model: torch.nn.Module, input_size: list[int], out: Path, x, images: bool, opset: int = OPSET):
    """Export, check, and keep the file only if the check passed (else a :class:`UserError` with the numbers)."""
    if not len(x):
        x = torch.randn(8, *input_size, generator=torch.Generator().manual_seed(0))
        images = False
    export_onnx(model, input_size, out, opset)
    check = check_onnx(out, model, x, opset, images)
    if not check.passed:
        out.unlink(missing_ok=True)
        detail = check.describe()
        raise UserError(f"the ONNX graph does not answer as the model does: {detail}", "onnx_mismatch", detail=detail)
    return check
