"""Device selection and mixed precision.

Runs use CUDA when it is there ("auto"), never a hard-coded ``.cuda()``. On CUDA, forward passes
run under bf16 autocast, which keeps fp32 master weights and the fp32 δ tensors, so the change
penalty and the optimizer state stay exact. The CPU path is plain fp32 and is the tested default.
"""

from __future__ import annotations

import contextlib

import torch

from core.errors import UserError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def select_device(name: str = "auto") -> torch.device:
    """Turn "auto" / "cpu" / "cuda" into a torch.device, refusing cuda where there is none."""
    if name not in DEVICE_CHOICES:
        raise UserError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' was asked for, but no CUDA GPU is available on this machine")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    """A human-readable device name: 'CPU' or the GPU's marketing name."""
    if device.type == "cuda":
        return f"GPU ({torch.cuda.get_device_name(device)})"
    return "CPU"


def autocast(device: torch.device):
    """bf16 autocast on CUDA (where Hopper/Ampere tensor cores pay off); a no-op elsewhere."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
