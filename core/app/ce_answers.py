"""The task worker's side of Review's "built from" block (:mod:`core.app.built_from`): the old and the
repaired model's answers on a repair's own counterexamples, computed once and kept in the run folder."""

from __future__ import annotations

import json

from core.app.built_from import answers_file
from core.app.store import Store
from core.app.stored_models import stored_bundle
from core.engine.devices import select_device
from core.engine.inference import normalize, predict_logits
from core.engine.runfolder import RunFolder
from core.errors import UserError
from core.formats.bundle import load_bundle
from core.formats.datasets import load_dataset, load_pixels


def counterexample_answers(store: Store, payload: dict, actor: str) -> dict:
    """Write ``{"before": [...], "after": [...]}`` (class names, in the order of the run's
    ``counterexamples/manifest.csv``) for the run ``payload["run_id"]``."""
    run = store.run(int(payload["run_id"]))
    out = answers_file(run)
    if out.is_file():
        return {"path": str(out)}
    folder = RunFolder(run["out_dir"])
    if not (folder.counterexamples_dir / "manifest.csv").is_file() or not folder.has_model():
        raise UserError("this repair has no stored counterexamples or no repaired model to ask", "no_ce_answers")
    base = stored_bundle(store, run["model_id"])
    names = base.meta.class_names
    ce = load_dataset(folder.counterexamples_dir, names)
    x = normalize(load_pixels(ce, base.meta.input_size), base.meta.mean, base.meta.std)
    dev = select_device("auto")
    answers = {}
    for side, model in (("before", base.model), ("after", load_bundle(folder.model_dir).model)):
        answers[side] = [names[int(i)] for i in predict_logits(model.to(dev), x, dev).argmax(1).numpy()]
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(answers), encoding="utf-8")
    tmp.replace(out)  # readers never see a half-written file
    return {"path": str(out)}
