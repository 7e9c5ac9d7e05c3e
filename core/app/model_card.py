"""The model card of a stored repair (:class:`core.engine.model_card.ModelCard`), built from the run, its
metrics (:class:`core.engine.results.RunMetrics`) and its audit rows: who started it, who labelled its
counterexamples, who approved it, when and under which four-eyes status. Written in the workbench's language
for an export from the Review page, in English for the MLflow registry and the command line.
:mod:`core.app.decisions` puts it in every export."""

from __future__ import annotations

from core.app.i18n import translator
from core.app.integrity import file_sha256, stored_model_sha256
from core.app.interpolated_runs import interpolation_of
from core.app.review import auto_strength
from core.app.runs import run_result
from core.app.store import Store
from core.app.summary import verdict_text
from core.app.verdict import judge
from core.engine.model_card import Approval, ModelCard, software_versions
from core.engine.runfolder import RunFolder
from core.errors import UserError
from core.formats.libmeta import folder_meta
from core.formats.meta import ModelFormat

LIBRARY = {ModelFormat.TIMM: "timm", ModelFormat.TRANSFORMERS: "transformers"}


def labelled_by(store: Store, run: dict) -> dict[str, int]:
    """Who labelled how many of the run's counterexamples (from its ``run_queued`` audit row; a run saved
    at a weaker strength has those of the run it came from)."""
    seen = set()
    while run is not None and run["id"] not in seen:
        seen.add(run["id"])
        queued = store.run_queued_detail(run["project_id"], run["id"])
        if queued is not None:
            return {str(k): int(v) for k, v in (queued.get("labelled_by") or {}).items()}
        origin = interpolation_of(run)
        run = store.run(origin["from_run"]) if origin else None
    return {}


def run_card(store: Store, run_id: int, approval: dict | None, lang: str = "en") -> ModelCard:
    """The card of a finished run; ``approval`` is its latest ``approved`` audit row, or None; its verdict in
    ``lang``."""
    run = store.run(run_id)
    metrics = run_result(store, run_id)
    if metrics is None:
        raise UserError("this run has no merged model to export", "no_export")
    folder = RunFolder(run["out_dir"])
    base = store.model(run["model_id"])
    meta = folder_meta(folder.model_dir)
    hashes = {"base": dict(base["sha256"]), "merged": stored_model_sha256(folder.model_dir)}
    if folder.delta_file.is_file():
        hashes["delta"] = {folder.delta_file.name: file_sha256(folder.delta_file)}
    as_json = metrics.to_json()
    words = verdict_text(judge(as_json), translator(lang), auto_strength=auto_strength(run, as_json))
    return ModelCard(
        name=f"{base['name']} (repaired, repair #{run_id})",
        base_model=base["name"],
        class_names=list(meta.class_names),
        library=LIBRARY.get(meta.format),
        metrics=metrics,
        labelled_by=labelled_by(store, run),
        started_by=run["created_by"],
        verdict=words,
        approval=_approval(approval),
        hashes=hashes,
        versions=software_versions(),
    )


def _approval(row: dict | None) -> Approval | None:
    if row is None:
        return None
    d = row["detail"]
    return Approval(row["actor"], row["ts"], d.get("four_eyes"), d.get("comment") or "")
