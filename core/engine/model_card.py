"""A repaired model's card: the README.md that goes with every export, in the Hugging Face model-card layout
(docs/FORMATS.md): a YAML header (``base_model``, the metrics as a ``model-index``, the license left for the
user), then intended use, what was repaired and how, the counterexamples, per-group results before and after
with their intervals, kept decisions, the verdict, the approval and the four-eyes status, the hashes of the
base, δ and merged weights, software versions and known limits.

Every number comes from the run's :class:`core.engine.results.RunMetrics`; who did what comes from the caller
(the workbench's audit rows, :mod:`core.app.model_card`, or the command line's ``made_by.json``). No torch here:
the page process writes cards too.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from importlib import metadata

from core.engine.results import GroupMetrics, RunMetrics
from core.engine.runfolder import RunFolder
from core.formats.meta import BundleMeta, ModelFormat, file_sha256

CARD_FILE = "README.md"
PACKAGES = ("torch", "torchvision", "timm", "transformers", "safetensors", "onnx", "onnxruntime", "numpy")
LIMITS = (
    "The results hold for the evaluation set named here; a group with few images has a wide interval, "
    "and the interval, not the point, is the honest figure.",
    "The repair saw few counterexamples: groups that were not among them or in the evaluation set were not "
    "measured and may have changed.",
    "The model's intended use, classes and input preprocessing are those of the base model; nothing here widens them.",
)


@dataclass(frozen=True)
class Approval:
    """Who approved the repair and when, the four-eyes status (``kept``, ``relaxed``) and their comment."""

    by: str
    at: str
    four_eyes: str | None
    comment: str = ""


@dataclass(frozen=True)
class ModelCard:
    """What a card states; :meth:`render` writes it."""

    name: str
    base_model: str
    class_names: list[str]
    library: str | None  # "timm", "transformers", or None for our bundle
    metrics: RunMetrics
    labelled_by: dict[str, int]  # who labelled how many counterexamples (empty: not known)
    started_by: str
    verdict: str
    approval: Approval | None
    hashes: dict[str, dict[str, str]]  # "base" / "delta" / "merged" → file → SHA-256
    versions: dict[str, str] = field(default_factory=dict)

    def header(self) -> dict:
        """The YAML header's fields (written as JSON, which YAML reads)."""
        out: dict = {"base_model": self.base_model, "tags": ["image-classification", "bias-repair"]}
        if self.library:
            out["library_name"] = self.library
        out["model-index"] = [{"name": self.name, "results": [_results(self.metrics)]}]
        return out

    def render(self) -> str:
        lines = ["---", "# license: not set; choose the license of your model and your data"]
        lines += [f"{k}: {json.dumps(v, ensure_ascii=False)}" for k, v in self.header().items()]
        lines += ["---", "", f"# {self.name}", ""]
        for title, body in self._sections():
            lines += [f"## {title}", "", *body, ""]
        return "\n".join(lines)

    def _sections(self) -> list[tuple[str, list[str]]]:
        m = self.metrics
        return [
            ("Intended use", _intended_use(self)),
            ("What was repaired and how", _how(m, self.started_by)),
            ("Counterexamples", _counterexamples(m, self.labelled_by)),
            ("Results per group, before and after", _groups(m.before, m.after)),
            ("Kept decisions", _kept(m)),
            ("Verdict", [self.verdict]),
            ("Approval", _approval(self.approval)),
            ("Hashes (SHA-256)", _hashes(self.hashes)),
            ("Software", [f"- {k}: {v}" for k, v in self.versions.items()]),
            ("Known limits", [f"- {line}" for line in LIMITS]),
        ]


def software_versions() -> dict[str, str]:
    """Python and the installed versions of the packages a repair and an export use (read from their
    metadata: nothing is imported)."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def _metric(kind: str, name: str, value: float | None) -> dict:
    return {"type": kind, "name": name, "value": None if value is None else round(value, 6)}


def _results(m: RunMetrics) -> dict:
    metrics = []
    for when, g in (("before", m.before), ("after", m.after)):
        if g is not None:
            metrics += [
                _metric("accuracy", f"accuracy {when}", g.accuracy),
                _metric("worst_group_accuracy", f"worst-group accuracy {when}", g.worst_group_accuracy),
                _metric("bias_gap", f"bias gap {when}", g.bias_gap),
            ]
    if m.comparison is not None:
        metrics.append(_metric("kept_decisions", "kept decisions", m.comparison.kept_decisions))
    task = {"type": "image-classification", "name": "Image classification"}
    return {"task": task, "dataset": {"name": "evaluation set", "type": "custom"}, "metrics": metrics}


def _intended_use(card: ModelCard) -> list[str]:
    return [
        f"The base model `{card.base_model}` repaired for a bias found on groups of its evaluation set. It "
        f"classifies images into {len(card.class_names)} classes ({', '.join(card.class_names)}), with the "
        "base model's input size and normalisation; use it where the base model was meant to be used.",
    ]


def _how(m: RunMetrics, started_by: str) -> list[str]:
    strength = "–" if m.strength is None else f"{m.strength:g}"
    out = [
        f"- method: {m.method}; strength: {strength}; steps: {m.steps}; stop: {m.stop.describe()}",
        f"- started by: {started_by}; seed: {m.seed if m.seed is not None else '–'}; device: {m.device or '–'}",
    ]
    if m.config:
        out.append(f"- settings: `{json.dumps(m.config, sort_keys=True)}`")
    if m.interpolation is not None:
        out.append(f"- saved at α = {m.interpolation.alpha:g} of repair #{m.interpolation.from_run} (θ + α·δ)")
    return out


def _counterexamples(m: RunMetrics, labelled_by: dict[str, int]) -> list[str]:
    who = ", ".join(f"{n} ({c})" for n, c in sorted(labelled_by.items())) or "not recorded"
    fixed = "–" if m.counterexamples_fixed is None else str(m.counterexamples_fixed)
    return [f"- used: {m.counterexamples if m.counterexamples is not None else '–'}; right after: {fixed}",
            f"- labelled by: {who}"]  # fmt: skip


def _interval(g) -> str:
    if g is None or g.accuracy is None:
        return "–"
    if g.ci_low is None or g.ci_high is None:
        return _pct(g.accuracy)
    return f"{_pct(g.accuracy)} [{_pct(g.ci_low)}, {_pct(g.ci_high)}]"


def _groups(before: GroupMetrics | None, after: GroupMetrics | None) -> list[str]:
    if before is None or after is None:
        return ["No evaluation set was given."]
    out = [
        f"Accuracy {_pct(before.accuracy)} → {_pct(after.accuracy)}; worst group {_pct(before.worst_group_accuracy)}"
        f" → {_pct(after.worst_group_accuracy)}; bias gap {_pct(before.bias_gap)} → {_pct(after.bias_gap)} "
        f"({after.n} images; intervals: bootstrap 95 %).",
        "",
        "| class | group | images | before | after |",
        "|---|---|---|---|---|",
    ]
    old = {(g.label, g.attribute): g for g in before.groups}
    for g in after.groups:
        cell = f"| {_cell(g.label)} | {_cell(g.attribute)} | {g.count} | {_interval(old.get((g.label, g.attribute)))}"
        out.append(f"{cell} | {_interval(g)} |")
    return out


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _kept(m: RunMetrics) -> list[str]:
    c = m.comparison
    if c is None:
        return ["Not measured (no evaluation set)."]
    return [
        f"- kept decisions: {_pct(c.kept_decisions)}; answers changed: {c.changed_predictions}; "
        f"fixed: {c.n_fixed if c.n_fixed is not None else '–'}; broken: {c.n_broken if c.n_broken is not None else '–'}",
    ]


def _approval(a: Approval | None) -> list[str]:
    if a is None:
        return ["Not approved in a workbench."]
    rule = {"kept": "kept (approved by someone who neither started it nor labelled most of it)",
            "relaxed": "relaxed by an admin for this approval"}.get(a.four_eyes or "", "not recorded")  # fmt: skip
    out = [f"- approved by: {a.by}, at {a.at}", f"- four-eyes rule: {rule}"]
    if a.comment:
        out.append(f"- comment: {_cell(a.comment)}")
    return out


def _hashes(hashes: dict[str, dict[str, str]]) -> list[str]:
    out = []
    for what in ("base", "delta", "merged"):
        for name, digest in sorted(hashes.get(what, {}).items()):
            out.append(f"- {what} · {name}: `{digest}`")
    return out or ["Not recorded."]


def folder_card(run: RunFolder, meta: BundleMeta, made_by: dict | None, verdict: str) -> ModelCard | None:
    """The card of a run folder written by ``python -m core repair`` (None without its metrics.json): the
    command line records who ran it (``made_by.json``) but no approval, and not the base model's files."""
    metrics = run.metrics()
    if metrics is None:
        return None
    hashes = {"merged": {f.name: file_sha256(f) for f in sorted(run.model_dir.iterdir()) if f.is_file()}}
    if run.delta_file.is_file():
        hashes["delta"] = {run.delta_file.name: file_sha256(run.delta_file)}
    who = (made_by or {}).get("user") or "not recorded"
    return ModelCard(
        name=f"{run.root.name} (repaired)", base_model=meta.architecture, class_names=list(meta.class_names),
        library=None if meta.format is ModelFormat.BUNDLE else meta.format.value, metrics=metrics, labelled_by={},
        started_by=who, verdict=verdict,
        approval=None, hashes=hashes, versions=software_versions(),
    )  # fmt: skip
