"""The allow-list of model architectures a bundle may name.

Only names in :data:`ARCHITECTURES` can be built. A bundle cannot bring its own code: weights come
from safetensors (or a weights-only state dict) and are loaded into one of these constructors. The
torchvision builders are called with ``weights=None`` so nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from core.errors import UserError
from core.formats.meta import ARCHITECTURE_NAMES


class SmallCNN(nn.Module):
    """The demo's small 3-conv CNN (about 29k parameters).

    Three conv-BN-ReLU blocks, average pooling to a 3×3 grid and a linear classifier. The 3×3 grid
    (rather than global pooling) keeps where things are, so the model can learn digit shapes as
    well as the tag shortcut; with global pooling it learned the tag colour alone. BatchNorm is
    there on purpose: it makes the "BatchNorm statistics stay frozen" rule of docs/DESIGN.md §3
    testable on the demo model too.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 32):
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=False),
            )

        self.features = nn.Sequential(
            block(in_channels, width // 2, 1),
            block(width // 2, width, 2),
            block(width, width * 2, 2),
        )
        self.pool = nn.AdaptiveAvgPool2d(3)
        self.classifier = nn.Linear(width * 2 * 9, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def _torchvision(name: str) -> Callable[[int, int], nn.Module]:
    def build(num_classes: int, in_channels: int) -> nn.Module:
        import torchvision.models as tvm

        if in_channels != 3:
            raise UserError(f"architecture {name!r} expects 3 input channels, the bundle says {in_channels}")
        return getattr(tvm, name)(weights=None, num_classes=num_classes)

    return build


ARCHITECTURES: dict[str, Callable[[int, int], nn.Module]] = {
    name: (lambda num_classes, in_channels: SmallCNN(num_classes, in_channels))
    if name == "small_cnn"
    else _torchvision(name)
    for name in ARCHITECTURE_NAMES
}


def build_model(architecture: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """Build an untrained model of an allow-listed architecture, in eval mode."""
    if architecture not in ARCHITECTURES:
        raise UserError(
            f"unknown architecture {architecture!r}; allowed: {', '.join(sorted(ARCHITECTURES))}",
            "unknown_architecture",
            architecture=str(architecture),
            allowed=", ".join(sorted(ARCHITECTURES)),
        )
    if not isinstance(num_classes, int) or num_classes < 2:
        raise UserError(f"num_classes must be an integer of at least 2, got {num_classes!r}")
    model = ARCHITECTURES[architecture](num_classes, in_channels)
    return model.eval()


def last_linear(model: nn.Module) -> tuple[str, nn.Linear] | None:
    """The model's last ``nn.Linear`` and its name: its classifier head (SmallCNN and every torchvision
    model on the allow-list end in one); None if it has none."""
    found = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            found = (name, module)
    return found


def classifier_out_features(model: nn.Module) -> int | None:
    """Size of the last Linear layer's output: what the model's classifier head produces."""
    head = last_linear(model)
    return None if head is None else head[1].out_features
