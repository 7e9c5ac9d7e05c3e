"""What a repair was built from, for the Review page's "built from" block: its counterexamples (each image
with its label, who labelled it, and the old and the repaired model's answer on it), how many of them the
repair fixes, who started it and the method.

The images and labels are the run folder's own copy (``counterexamples/manifest.csv``, written when the run
was queued by :func:`core.app.runs.submit_run`), so a label changed later does not change what the repair
was built from. The two models' answers on them are computed once by the task worker
(:func:`core.app.ce_answers.counterexample_answers`) into the run folder.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from core.app import jobs
from core.app.accounts import User
from core.app.runs import run_metrics
from core.app.store import Store
from core.engine.runfolder import RunFolder

ANSWERS_FILE = "counterexample_answers.json"  # in the run folder (not in counterexamples/, which α-runs copy)


@dataclass(frozen=True)
class BuiltFromImage:
    """One counterexample of a repair: its image file, label, attribute, who labelled it (None for runs made
    before this was recorded) and the old and repaired model's answers (None until computed)."""

    file: str
    label: str
    attribute: str
    labelled_by: str | None
    before: str | None = None
    after: str | None = None

    @property
    def fixed(self) -> bool | None:
        return None if self.after is None else self.after == self.label


@dataclass(frozen=True)
class BuiltFrom:
    """A repair's counterexamples (``images``), how many it fixes (``fixed`` of ``total``; None when the run
    did not record it), who started it and its method (its strength in words: :func:`core.app.review.strength_words`)."""

    images: list[BuiltFromImage]
    total: int
    fixed: int | None
    started_by: str
    method: str


def answers_file(run: dict) -> Path:
    return RunFolder(run["out_dir"]).root / ANSWERS_FILE


def _manifest_rows(run: dict) -> list[dict]:
    f = RunFolder(run["out_dir"]).counterexamples_dir / "manifest.csv"
    if not f.is_file():
        return []
    with open(f, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _answers(store: Store, run: dict, actor: User | None) -> dict | None:
    """The stored answers, computed first by the task worker when ``actor`` is given and the run has a model."""
    f = answers_file(run)
    if not f.is_file() and actor is not None and RunFolder(run["out_dir"]).has_model():
        jobs.compute(store, "counterexample_answers", {"run_id": run["id"]}, actor, run["project_id"])
    return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else None


def built_from(store: Store, run_id: int, actor: User | None = None) -> BuiltFrom:
    """What repair ``run_id`` was built from. With ``actor`` the models' answers on the counterexamples are
    computed if they are not stored yet (a few images: a second or two); without, they are None then."""
    run = store.run(run_id)
    rows = _manifest_rows(run)
    answers = _answers(store, run, actor) if rows else None
    root = RunFolder(run["out_dir"]).counterexamples_dir
    images = [
        BuiltFromImage(
            file=str(root / r["path"]),
            label=r["label"],
            attribute=r.get("attribute") or "",
            labelled_by=r.get("labelled_by") or None,
            before=answers["before"][i] if answers else None,
            after=answers["after"][i] if answers else None,
        )
        for i, r in enumerate(rows)
    ]
    m = run_metrics(store, run_id) or {}
    return BuiltFrom(
        images=images,
        total=m.get("counterexamples") or len(images) or run["n_counterexamples"],
        fixed=m.get("counterexamples_fixed"),
        started_by=run["created_by"],
        method=run["method"],
    )
