"""A run folder: every path and file of one repair, in one type.

``write_run`` (:mod:`core.engine.repair`, the CLI and the workbench's runs worker) and a run saved at a
lower strength (:func:`core.app.compute.save_alpha_run`) write them; the Review page, the approval,
the export and the α previews read them, all through :class:`RunFolder`::

    metrics.json          RunMetrics (core.engine.results), its one reader is RunFolder.metrics()
    model/                the repaired model in the layout it came in (mergeable methods): model.json +
                          model.safetensors, or a timm or transformers folder (core/formats/libmeta.py)
    delta.safetensors     θ' − θ per changed parameter (the audit record of what changed)
    history.csv           one row per training step
    predictions.csv       the old and new answer per reported evaluation row
    layer_changes.csv     ‖δ‖ and ‖δ‖/‖θ‖ per layer
    counterexamples/      the counterexamples the run used (workbench runs)
    alpha/a0500.json      the run previewed at strength α = 0.5 (workbench, Review page)
    made_by.json          who made the run with which command (CLI)

No torch here: the page process reads run folders. The model and δ are written by
:func:`core.engine.repair.write_weights`.
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from core.engine.events import StepEvent
from core.engine.results import RunMetrics, jsonable
from core.formats.libmeta import has_model_meta

BUNDLE_META = "model.json"
BUNDLE_WEIGHTS = "model.safetensors"
BUNDLE_FILES = (BUNDLE_META, BUNDLE_WEIGHTS)
HISTORY_COLUMNS = ["step", "loss", "task_loss", "penalty", "fixed", "total", "heldout_worst_group", "elapsed_s"]
PREDICTION_COLUMNS = ["index", "path", "label", "attribute", "before", "after"]
LAYER_COLUMNS = ["layer", "norm", "relative", "parameters"]


@dataclass(frozen=True)
class PredictionRow:
    """One reported evaluation row: its index in the evaluation set, path, label (a class index or
    name, as the run's writer had it), attribute, and the old and new answers (class indices)."""

    index: int
    path: str
    label: int | str
    attribute: str
    before: int
    after: int


@dataclass(frozen=True)
class RunFolder:
    """The folder of one run (it need not exist yet)."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    # -- paths -------------------------------------------------------------------------------
    @property
    def metrics_file(self) -> Path:
        return self.root / "metrics.json"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def model_weights(self) -> Path:
        return self.model_dir / BUNDLE_WEIGHTS

    @property
    def model_meta(self) -> Path:
        return self.model_dir / BUNDLE_META

    @property
    def delta_file(self) -> Path:
        return self.root / "delta.safetensors"

    @property
    def history_file(self) -> Path:
        return self.root / "history.csv"

    @property
    def predictions_file(self) -> Path:
        return self.root / "predictions.csv"

    @property
    def layer_changes_file(self) -> Path:
        return self.root / "layer_changes.csv"

    @property
    def counterexamples_dir(self) -> Path:
        return self.root / "counterexamples"

    @property
    def made_by_file(self) -> Path:
        return self.root / "made_by.json"

    def preview_file(self, alpha: float) -> Path:
        """Where the run previewed at strength α is kept (``alpha/a0500.json`` for α = 0.5)."""
        return self.root / "alpha" / f"a{round(1000 * alpha):04d}.json"

    # -- what is there -------------------------------------------------------------------------
    def has_model(self) -> bool:
        """A mergeable method's repaired model is there (side-tuning has none)."""
        return self.model_weights.is_file()

    def has_model_meta(self) -> bool:
        """model/ describes its model: a model.json, or a timm or transformers config.json."""
        return has_model_meta(self.model_dir)

    def has_predictions(self) -> bool:
        return self.predictions_file.is_file()

    # -- metrics.json ------------------------------------------------------------------------
    def metrics(self) -> RunMetrics | None:
        """The run's metrics (None until the run has written them)."""
        raw = self.metrics_json()
        return None if raw is None else RunMetrics.from_json(raw)

    def metrics_json(self) -> dict | None:
        """The run's metrics as the plain dict :meth:`RunMetrics.to_json` gives (every key earlier
        versions wrote), for the readers that take a dict."""
        if not self.metrics_file.is_file():
            return None
        return RunMetrics.from_json(json.loads(self.metrics_file.read_text(encoding="utf-8"))).to_json()

    def write_metrics(self, metrics: RunMetrics) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.metrics_file.write_text(json.dumps(jsonable(metrics.to_json()), indent=2), encoding="utf-8")

    # -- the tables ----------------------------------------------------------------------------
    def write_history(self, history: list[StepEvent]) -> None:
        _write_csv(self.history_file, [e.to_json() for e in history], HISTORY_COLUMNS)

    def write_predictions(self, rows: list[PredictionRow]) -> None:
        _write_csv(self.predictions_file, [r.__dict__ for r in rows], PREDICTION_COLUMNS)

    def predictions(self) -> list[PredictionRow]:
        """The rows of ``predictions.csv`` as written (labels as the writer had them); [] when absent."""
        if not self.has_predictions():
            return []
        with open(self.predictions_file, encoding="utf-8", newline="") as fh:
            return [
                PredictionRow(
                    int(r["index"]), r["path"], r["label"], r.get("attribute") or "", int(r["before"]), int(r["after"])
                )  # fmt: skip
                for r in csv.DictReader(fh)
            ]

    def write_layer_changes(self, rows: list[dict]) -> None:
        _write_csv(self.layer_changes_file, rows, LAYER_COLUMNS)

    def copy_counterexamples(self, source: RunFolder) -> None:
        """The counterexamples of ``source`` (a run this one comes from), when it kept them."""
        if source.counterexamples_dir.is_dir():
            shutil.copytree(source.counterexamples_dir, self.counterexamples_dir)


def _write_csv(path: Path, rows: list[dict], cols: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
