"""What the Review page shows and the HTML report holds for one repair, decided in one place.

:func:`review_content` gathers, for one repair at full strength or at a strength θ + α·δ that the
Review page previews, its metrics, its verdict and the verdict in words, and the test images whose
answer changed. The page renders that; the report (:func:`core.app.report.report_html`) is built from
the same content at full strength, together with the decisions recorded on the repair
(:func:`decision_events`). Which repairs can be reviewed, and the words for a repair in the picker
and for the model in use, are here too, so that the Review and Repair pages say them alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from core.app import display, summary
from core.app.baseline import ORIGINAL, Baseline, against, baseline_answers
from core.app.runs import changed_predictions, decision_state, model_in_use, run_metrics
from core.app.store import Store
from core.app.verdict import Verdict, judge

PAGE_SAMPLE = 16  # changed images shown per side (fixed, broken) on the page
REPORT_SAMPLE = 24  # and in the report

# The audit rows that are decisions on a repair: they go into its report.
DECISION_ACTIONS = ("approved", "rejected", "exported")


@dataclass(frozen=True)
class ReviewContent:
    """One repair as it is reviewed: its run row, its metrics (at the previewed strength, if any),
    the verdict on them and its words, and the test images whose answer changed (each a dict of
    :func:`core.app.runs.changed_predictions`)."""

    run: dict
    metrics: dict
    verdict: Verdict
    words: str
    changed: list[dict]
    baseline: Baseline = ORIGINAL

    @property
    def fixed(self) -> list[dict]:
        return [c for c in self.changed if c["fixed"]]

    @property
    def broken(self) -> list[dict]:
        return [c for c in self.changed if c["broken"]]

    def card_html(self, t: Callable[..., str], with_verdict: bool = False) -> str:
        """The before/after card (:func:`core.app.summary.summary_card_html`), with the verdict's words
        in it for the report (the page shows them in its own alert box above)."""
        return summary.summary_card_html(self.metrics, self.verdict, t, verdict=self.words if with_verdict else None)


def reviewable_runs(store: Store, project_id: int) -> list[dict]:
    """The project's repairs that can be reviewed: the finished ones, oldest first."""
    return [r for r in store.runs(project_id) if r["status"] == "done"]


def auto_strength(run: dict, metrics: dict) -> float | None:
    """The strength "auto" chose, for a repair whose strength was left to the workbench; else None (also for
    a repair saved at a lower α from such a repair: its model is not the one auto chose)."""
    auto = run["config"].get("strength") == "auto" and not run["config"].get("interpolation")
    return metrics.get("strength") if auto else None


def strength_words(run: dict, metrics: dict | None, t: Callable[..., str]) -> str:
    """A repair's strength for people: ``1,000``; for "auto" the strength it chose once known
    (``auto → 10,000``), with the α of a repair saved at a lower strength (``auto → 10,000 · α 0.50``)."""
    label = run["strength_label"]
    chosen = (metrics or {}).get("strength")
    if label.startswith("auto") and chosen is not None:
        return t("strength_auto_chose", strength=display.number(chosen)) + label.removeprefix("auto")
    return display.number(label)


def review_content(
    store: Store, run_id: int, t: Callable[..., str], preview: dict | None = None, baseline: Baseline = ORIGINAL
) -> ReviewContent:
    """The repair ``run_id`` as reviewed: at full strength, or with ``preview`` (what
    :func:`core.app.interpolation.preview` returns for an α below 1) at that strength; compared with
    ``baseline`` (:mod:`core.app.baseline`: the original model, or the model in use now)."""
    run = store.run(run_id)
    after = preview["after"] if preview is not None else None
    own = preview["metrics"] if preview is not None else run_metrics(store, run_id)
    metrics = against(store, run_id, own, after, baseline)
    v = judge(metrics)
    return ReviewContent(
        run=run,
        metrics=metrics,
        verdict=v,
        words=summary.verdict_text(v, t, auto_strength=auto_strength(run, own)),
        changed=changed_predictions(store, run_id, after=after, before=baseline_answers(store, run_id, baseline)),
        baseline=baseline,
    )


def decision_events(store: Store, run: dict) -> list[dict]:
    """The audit rows that decided on a repair, oldest first: its approvals, rejections and exports,
    and the roll-backs away from its repaired model."""
    model = run["repaired_model_id"]
    return [
        e
        for e in store.audit_events(run["project_id"])
        if (e["detail"].get("run_id") == run["id"] and e["action"] in DECISION_ACTIONS)
        or (e["action"] == "rolled_back" and model and e["detail"].get("from_model_id") == model)
    ]


def run_item(run: dict, project: dict, t: Callable[..., str], store: Store | None = None) -> str:
    """A repair as the Review page's picker names it: number, strength (with ``store``, the one auto chose)
    and where its decision stands."""
    return t(
        "review_run_item",
        run=run["id"],
        strength=strength_words(run, run_metrics(store, run["id"]) if store else None, t),
        decision=t(f"decision_{decision_state(run, project)}"),
    )


def in_use_line(store: Store, project_id: int, t: Callable[..., str]) -> str:
    """Which model the project uses now: the original, or the repaired model of which repair."""
    in_use = model_in_use(store, project_id)
    return t("review_in_use_original") if in_use is None else t("review_in_use_repair", run=in_use)
