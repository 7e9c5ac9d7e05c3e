"""Which guard the next repair will use, said on the Repair page before it runs (docs/REPAIR_GUARD.md).

CPT's default rule, ``check``, steers a repair by the labelled *check split* of the evaluation set (its rows marked
``split=val``, else a share set aside automatically; :mod:`core.engine.check_rows` decides which, the same way the
worker will). Without a check split it falls back to the label-free kept rule on the reference images (the project's
reference set, else its pool), and without those to the paper's rule, which guards nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from core.app.projects import project_summary
from core.app.runs import method_schema
from core.app.store import Store
from core.engine.check_results import CheckSource
from core.engine.check_rows import CHECK_SHARE, split_rows
from core.formats.datasets import load_dataset


class GuardKind(StrEnum):
    CHECK = "check"  # labelled check images from the evaluation set
    REFERENCE = "reference"  # the old answers on unlabelled reference images (label-free)
    NONE = "none"  # the counterexamples alone (the paper's rule)


@dataclass(frozen=True)
class GuardPlan:
    """The guard of the next repair and the numbers its sentence names."""

    kind: GuardKind
    check_rows: int = 0
    reported_rows: int = 0
    source: CheckSource | None = None
    reference_images: int = 0

    def words(self, t: Callable[..., str]) -> str:
        if self.kind is GuardKind.CHECK:
            key = "tune_guard_check_val" if self.source is CheckSource.VAL_ROWS else "tune_guard_check_carved"
            return t(key, check=self.check_rows, reported=self.reported_rows, share=f"{CHECK_SHARE:.0%}")
        if self.kind is GuardKind.REFERENCE:
            return t("tune_guard_reference", n=self.reference_images)
        return t("tune_guard_none")


@functools.lru_cache(maxsize=16)
def _split_counts(path: str, class_names: tuple[str, ...], stamp: float):
    """The check split of the evaluation set at ``path`` (``stamp``: its manifest's time, so an edit is seen)."""
    ds = load_dataset(Path(path), list(class_names), verify_images=False)
    return split_rows(ds.labels, ds.attributes, [r.split for r in ds.records])[2]


def _stamp(path: Path) -> float:
    manifest = path / "manifest.csv"
    return (manifest if manifest.is_file() else path).stat().st_mtime


def guard_plan(store: Store, project_id: int, method: str, config: dict) -> GuardPlan:
    """What will guard a repair of ``method`` with ``config`` (the page's settings) in this project."""
    s = project_summary(store, project_id)
    defaults = {f["name"]: f["default"] for f in method_schema(method)}
    rule = config.get("stop_rule", defaults.get("stop_rule"))
    ev = s["eval"]
    if rule == "check" and ev is not None and Path(ev["path"]).exists():
        counts = _split_counts(ev["path"], tuple(s["class_names"]), _stamp(Path(ev["path"])))
        if counts.check > 0:
            return GuardPlan(GuardKind.CHECK, counts.check, counts.reported, counts.source)
    reference = s["reference"] or s["pool"]
    if rule in ("check", "kept") and reference is not None:
        return GuardPlan(GuardKind.REFERENCE, reference_images=int(reference["n_items"]))
    return GuardPlan(GuardKind.NONE)


# Where the invariance hint was measured to help (docs/BENCHMARKS.md): standard torchvision networks; on the demo's
# small CNN and the photo suite's it did not.
HINT_HELPED_ON = ("resnet", "mobilenet", "efficientnet", "convnext")


def hint_helps(architecture: str, method: str, config: dict) -> bool:
    """Whether the invariance hint is worth suggesting: ``method`` has it, it is not set yet, and the model is of a
    kind where it was measured to help."""
    has_hint = any(f["name"] == "invariance" for f in method_schema(method))
    return has_hint and config.get("invariance", "none") == "none" and architecture.startswith(HINT_HELPED_ON)


def offer_hint(store: Store, project_id: int, method: str, config: dict) -> bool:
    """:func:`hint_helps` for the project's model in use."""
    model = project_summary(store, project_id)["active_model"]
    return hint_helps((model or {}).get("meta", {}).get("architecture", ""), method, config)
