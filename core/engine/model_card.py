"""A repaired model's card: the README.md that goes with every export, in the Hugging Face model-card layout
(docs/FORMATS.md): a YAML header (``base_model``, the metrics as a ``model-index``, the license left for the
user), then intended use, what was repaired and how, the counterexamples, per-group results before and after
with their intervals, kept decisions, the verdict, the approval and the four-eyes status, the hashes of the
base, δ and merged weights, software versions and known limits.

Every number comes from the run's :class:`core.engine.results.RunMetrics`; who did what comes from the caller
(the workbench's audit rows, :mod:`core.app.model_card`, or the command line's ``made_by.json``). The words come
from a translator (``modelcard_*`` keys of ``assets/i18n/<lang>.json``): the workbench writes the card in its language,
the command line in English; the YAML header, which tools read, is always in English. No torch here: the page
process writes cards too.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata

from core.engine.results import GroupMetrics, RunMetrics
from core.engine.runfolder import RunFolder
from core.formats.meta import BundleMeta, ModelFormat, file_sha256

CARD_FILE = "README.md"
PACKAGES = ("torch", "torchvision", "timm", "transformers", "safetensors", "onnx", "onnxruntime", "numpy")
LIMITS = ("modelcard_limit_interval", "modelcard_limit_unseen", "modelcard_limit_use")
Translator = Callable[..., str]  # t(key, **values) -> text (core.app.i18n.translator)


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

    def render(self, t: Translator) -> str:
        """The card's text, its words from ``t`` (the header's keys and metric names stay English)."""
        lines = ["---", "# " + t("modelcard_license")]
        lines += [f"{k}: {json.dumps(v, ensure_ascii=False)}" for k, v in self.header().items()]
        lines += ["---", "", f"# {self.name}", ""]
        for title, body in self._sections(t):
            lines += [f"## {t(title)}", "", *body, ""]
        return "\n".join(lines)

    def _sections(self, t: Translator) -> list[tuple[str, list[str]]]:
        m = self.metrics
        return [
            ("modelcard_intended_use", _intended_use(self, t)),
            ("modelcard_how", _how(m, self.started_by, t)),
            ("modelcard_counterexamples", _counterexamples(m, self.labelled_by, t)),
            ("modelcard_groups", _groups(m.before, m.after, t)),
            ("modelcard_kept", _kept(m, t)),
            ("modelcard_verdict", [self.verdict]),
            ("modelcard_approval", _approval(self.approval, t)),
            ("modelcard_hashes", _hashes(self.hashes, t)),
            ("modelcard_software", [f"- {k}: {v}" for k, v in self.versions.items()]),
            ("modelcard_limits", [f"- {t(key)}" for key in LIMITS]),
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


def _intended_use(card: ModelCard, t: Translator) -> list[str]:
    names = ", ".join(card.class_names)
    return [t("modelcard_intended_use_text", base=card.base_model, n=len(card.class_names), classes=names)]


def _how(m: RunMetrics, started_by: str, t: Translator) -> list[str]:
    strength = "–" if m.strength is None else f"{m.strength:g}"
    out = [
        "- " + t("modelcard_how_method", method=m.method, strength=strength, steps=m.steps, stop=m.stop.describe()),
        "- " + t("modelcard_how_started", who=started_by or t("modelcard_not_recorded"),
                 seed=m.seed if m.seed is not None else "–", device=m.device or "–"),
    ]  # fmt: skip
    if m.config:
        out.append("- " + t("modelcard_how_settings", settings=f"`{json.dumps(m.config, sort_keys=True)}`"))
    if m.interpolation is not None:
        out.append("- " + t("modelcard_how_alpha", alpha=f"{m.interpolation.alpha:g}", run=m.interpolation.from_run))
    return out


def _counterexamples(m: RunMetrics, labelled_by: dict[str, int], t: Translator) -> list[str]:
    who = ", ".join(f"{n} ({c})" for n, c in sorted(labelled_by.items())) or t("modelcard_not_recorded")
    fixed = "–" if m.counterexamples_fixed is None else str(m.counterexamples_fixed)
    used = m.counterexamples if m.counterexamples is not None else "–"
    return ["- " + t("modelcard_ce_used", n=used, fixed=fixed), "- " + t("modelcard_ce_labelled_by", who=who)]


def _interval(g) -> str:
    if g is None or g.accuracy is None:
        return "–"
    if g.ci_low is None or g.ci_high is None:
        return _pct(g.accuracy)
    return f"{_pct(g.accuracy)} [{_pct(g.ci_low)}, {_pct(g.ci_high)}]"


def _groups(before: GroupMetrics | None, after: GroupMetrics | None, t: Translator) -> list[str]:
    if before is None or after is None:
        return [t("modelcard_no_eval")]
    out = [
        t("modelcard_groups_summary", acc_before=_pct(before.accuracy), acc_after=_pct(after.accuracy),
          wg_before=_pct(before.worst_group_accuracy), wg_after=_pct(after.worst_group_accuracy),
          gap_before=_pct(before.bias_gap), gap_after=_pct(after.bias_gap), n=after.n),
        "",
        t("modelcard_groups_columns"),
        "|---|---|---|---|---|",
    ]  # fmt: skip
    old = {(g.label, g.attribute): g for g in before.groups}
    for g in after.groups:
        cell = f"| {_cell(g.label)} | {_cell(g.attribute)} | {g.count} | {_interval(old.get((g.label, g.attribute)))}"
        out.append(f"{cell} | {_interval(g)} |")
    return out


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _kept(m: RunMetrics, t: Translator) -> list[str]:
    c = m.comparison
    if c is None:
        return [t("modelcard_kept_none")]
    fixed = c.n_fixed if c.n_fixed is not None else "–"
    broken = c.n_broken if c.n_broken is not None else "–"
    return ["- " + t("modelcard_kept_line", kept=_pct(c.kept_decisions), changed=c.changed_predictions, fixed=fixed,
                     broken=broken)]  # fmt: skip


def _approval(a: Approval | None, t: Translator) -> list[str]:
    if a is None:
        return [t("modelcard_not_approved")]
    rule = {"kept": "modelcard_four_eyes_kept", "relaxed": "modelcard_four_eyes_relaxed"}.get(
        a.four_eyes or "", "modelcard_not_recorded"
    )
    out = ["- " + t("modelcard_approved_by", who=a.by, at=a.at), "- " + t("modelcard_four_eyes", rule=t(rule))]
    if a.comment:
        out.append("- " + t("modelcard_comment", comment=_cell(a.comment)))
    return out


def _hashes(hashes: dict[str, dict[str, str]], t: Translator) -> list[str]:
    out = []
    for what in ("base", "delta", "merged"):
        for name, digest in sorted(hashes.get(what, {}).items()):
            out.append(f"- {what} · {name}: `{digest}`")
    return out or [t("modelcard_not_recorded")]


def folder_card(run: RunFolder, meta: BundleMeta, made_by: dict | None, verdict: str) -> ModelCard | None:
    """The card of a run folder written by ``python -m core repair`` (None without its metrics.json): the
    command line records who ran it (``made_by.json``) but no approval, and not the base model's files."""
    metrics = run.metrics()
    if metrics is None:
        return None
    hashes = {"merged": {f.name: file_sha256(f) for f in sorted(run.model_dir.iterdir()) if f.is_file()}}
    if run.delta_file.is_file():
        hashes["delta"] = {run.delta_file.name: file_sha256(run.delta_file)}
    who = (made_by or {}).get("user") or ""  # rendered as "not recorded"
    return ModelCard(
        name=f"{run.root.name} (repaired)", base_model=meta.architecture, class_names=list(meta.class_names),
        library=None if meta.format is ModelFormat.BUNDLE else meta.format.value, metrics=metrics, labelled_by={},
        started_by=who, verdict=verdict,
        approval=None, hashes=hashes, versions=software_versions(),
    )  # fmt: skip
