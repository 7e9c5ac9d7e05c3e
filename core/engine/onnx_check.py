"""What an ONNX export states (docs/FORMATS.md): its opset and how it compared with PyTorch. No torch here, so
that the workbench's page process can read an export's check (:mod:`core.engine.onnx_export` writes it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

OPSET = 17
TOLERANCE = 1e-4  # the largest |logit difference| accepted between onnxruntime and PyTorch (float32, CPU)
ONNX_FILE = "model.onnx"
CHECK_FILE = "onnx_check.json"


@dataclass(frozen=True)
class OnnxCheck:
    """How the exported graph compared with PyTorch: on how many inputs (evaluation images, or random
    inputs when none were given), the largest logit difference, and how many answers differed."""

    opset: int
    inputs: int
    images: bool
    max_abs_diff: float
    answers_differ: int
    onnxruntime: str
    tolerance: float = TOLERANCE

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance and self.answers_differ == 0

    def describe(self) -> str:
        what = "evaluation images" if self.images else "random inputs (give --data for the evaluation images)"
        return (
            f"ONNX opset {self.opset}; onnxruntime {self.onnxruntime} against PyTorch on {self.inputs} {what}: "
            f"largest logit difference {self.max_abs_diff:.2e} (tolerance {self.tolerance:g}), "
            f"{self.answers_differ} answers differ"
        )

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> OnnxCheck:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
