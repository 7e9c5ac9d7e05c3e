"""The typed results of a repair: metrics.json read and written by one type, stop and no-change reasons
as enums with words in both languages, progress events, run folders, and the method registration's
words (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from core.app import runs
from core.app.i18n import LANGUAGES, catalog, translator
from core.engine.configs import SPECS, config_schema, make_config, setting_help_key, strength_of
from core.engine.events import (
    AutoCandidateDone,
    AutoSweepDone,
    AutoTrialStarted,
    CandidateRow,
    StepEvent,
    StepStats,
    event_from_json,
)
from core.engine.request import DataRefs, RunRequest
from core.engine.results import (
    NO_CHANGE_WORDS,
    NoChange,
    NoChangeCode,
    Restored,
    RestoreRule,
    RunMetrics,
    Stop,
    StopReason,
    jsonable,
)
from core.engine.runfolder import PredictionRow, RunFolder
from core.errors import UserError

# metrics.json files written by the code before these types existed (tests/data/run_metrics): CLI repairs
# of the demo (kept, held-out and paper rules, automatic strength, side-tuning, LoRA, no evaluation set),
# a workbench run, its α run and an α preview.
SAVED = sorted((Path(__file__).parent / "data" / "run_metrics").glob("*.json"))


def _metrics_of(path: Path) -> dict:
    raw = json.loads(path.read_text(encoding="utf-8"))
    return raw["metrics"] if "alpha" in raw else raw  # an α preview holds the metrics beside its answers


def _saved(name: str) -> dict:
    return _metrics_of(next(p for p in SAVED if p.stem == name))


def test_the_saved_files_cover_every_shape():
    names = {p.stem for p in SAVED}
    assert {"cpt_kept", "cpt_heldout", "cpt_auto_no_change", "side_tuning", "finetune_head_es_no_eval"} <= names
    assert {"workbench_alpha_0.5", "workbench_alpha_preview"} <= names


@pytest.mark.parametrize("path", SAVED, ids=lambda p: p.stem)
def test_every_metrics_file_of_earlier_versions_reads_and_writes_back_the_same(path, tmp_path):
    raw = _metrics_of(path)
    m = RunMetrics.from_json(raw)
    assert m.to_json() == raw and list(m.to_json()) == list(raw)  # the same keys, in the same order
    folder = RunFolder(tmp_path / "run")
    folder.root.mkdir()
    folder.metrics_file.write_text(json.dumps(raw), encoding="utf-8")
    assert folder.metrics() == m and folder.metrics_json() == raw
    folder.write_metrics(m)
    assert RunFolder(folder.root).metrics() == m


def test_typed_fields_of_saved_files():
    kept = RunMetrics.from_json(_saved("cpt_kept"))
    assert kept.stop == Stop(StopReason.MAX_STEPS, Restored(RestoreRule.KEPT, 29, 14, 16))
    assert kept.stop.restored_step == 29 and not kept.stop.kept_old_model
    floor = RunMetrics.from_json(_saved("cpt_floor_restored"))
    assert floor.stop.kept_old_model and floor.no_change.code == NoChangeCode.KEPT_FLOOR
    assert floor.no_change.share == pytest.approx(1 - floor.config["keep_floor"])
    auto = RunMetrics.from_json(_saved("cpt_auto_no_change"))
    assert auto.stop.reason is StopReason.AUTO_NO_CHANGE and auto.auto_strength.chosen is None
    assert auto.no_change.code == auto.auto_strength.code == NoChangeCode.NO_SAFE_SETTING
    none = RunMetrics.from_json(_saved("finetune_head_es_no_eval"))
    assert none.before is None and none.comparison is None and "before" not in none.to_json()


def test_a_minimal_metrics_file_reads_and_keeps_its_keys():
    """The keys of a hand-written finished run (tests/run_fixtures.py writes such a file)."""
    raw = _saved("workbench_run")
    small = {k: raw[k] for k in ("method", "strength", "steps", "before", "after", "kept_decisions",
                                 "errors_introduced", "errors_corrected", "changed_predictions", "device",
                                 "stop_reason", "cancelled", "counterexamples")}  # fmt: skip
    out = RunMetrics.from_json(small).to_json()
    assert {k: out[k] for k in small} == small
    assert "n_fixed" not in out and "seed" not in out and "config" not in out  # absent stays absent


def test_stop_lines_read_back():
    for stop in (
        Stop(StopReason.ALL_FIXED),
        Stop(StopReason.KEPT_FLOOR, Restored(RestoreRule.KEPT, 0, 3, 16)),
        Stop(StopReason.MAX_STEPS, Restored(RestoreRule.HELDOUT, 15)),
        Stop(StopReason.INTERPOLATED),
    ):
        assert Stop.from_text(stop.describe()) == stop
    assert Stop(StopReason.KEPT_FLOOR, Restored(RestoreRule.KEPT, 0, 3, 16)).describe() == (
        "kept_floor; restored step 0 (3/16 fixed)"
    )
    for bad in ("kept_floor; restored somewhere", "no such reason", "cancelled before it started"):
        with pytest.raises(ValueError):
            Stop.from_text(bad)


def test_every_stop_and_no_change_reason_has_words_in_both_languages():
    for lang in LANGUAGES:
        words = catalog(lang)
        assert all(r.key in words for r in StopReason), lang
        for code in NoChangeCode:
            assert "{share}" in words[code.key] or "{share" not in NO_CHANGE_WORDS[code], (lang, code)
    en = catalog("en")
    for code, sentence in NO_CHANGE_WORDS.items():  # one wording: the pages' English is the CLI's
        assert en[code.key].format(share="97%") == sentence.format(share=0.97), code


def test_no_change_reasons_are_translated_and_an_unknown_code_keeps_its_sentence():
    nc = NoChange.of(NoChangeCode.KEPT_FLOOR, 1 - 0.99)
    assert nc.to_json() == {"code": "kept_floor", "reason": nc.reason} and "1%" in nc.reason
    assert nc.words(translator("en")) == nc.reason
    ja = nc.words(translator("ja"))
    assert "1%" in ja and ja != nc.reason and any(ord(ch) > 0x3000 for ch in ja)
    odd = NoChange.from_json({"code": "retired_code", "reason": "an old sentence"})
    assert odd.key is None and odd.words(translator("ja")) == "an old sentence"


def test_progress_events_read_back_from_their_json():
    step = StepEvent(3, 10, StepStats(1.5, 1.0, 0.5, anchor=0.1), 2, 4, None, 0.99, 1.25, "CPU")
    assert step.to_json() == {
        "step": 3, "max_steps": 10, "loss": 1.5, "task_loss": 1.0, "penalty": 0.5, "anchor": 0.1, "fixed": 2,
        "total": 4, "heldout_worst_group": None, "reference_agreement": 0.99, "elapsed_s": 1.25, "device": "CPU",
    }  # fmt: skip
    assert "anchor" not in dataclasses.replace(step, stats=StepStats(1.0, 1.0, 0.0)).to_json()
    row = CandidateRow(1e4, 0.5, 0.98, False, True, False)
    for event in (
        step,
        dataclasses.replace(step, backtracked=True),
        AutoTrialStarted(1, 3, 1e6, 2, 2, 1, 6),
        AutoCandidateDone(2, 6, row),
        AutoSweepDone(6, 6),
    ):
        assert event_from_json(json.loads(json.dumps(event.to_json()))) == event
    assert AutoCandidateDone(2, 6, row).to_json()["phase"] == "auto"
    assert not StepStats(float("nan"), 1.0, 0.0).finite() and StepStats(1.0, 1.0, 0.0).finite()


def test_run_folder_owns_its_files(tmp_path):
    folder = RunFolder(tmp_path / "r")
    assert not folder.has_model() and folder.metrics() is None and folder.predictions() == []
    rows = [PredictionRow(4, "images/a.png", 2, "red", 1, 2), PredictionRow(7, "images/b.png", "two", "", 2, 2)]
    folder.write_predictions(rows)
    assert folder.predictions() == [dataclasses.replace(r, label=str(r.label)) for r in rows]
    assert folder.predictions_file.read_text().splitlines()[0] == "index,path,label,attribute,before,after"
    assert folder.model_weights == folder.root / "model" / "model.safetensors"
    assert folder.preview_file(0.5) == folder.root / "alpha" / "a0500.json"
    assert jsonable({"a": float("nan"), "b": [1.0, float("inf")]}) == {"a": None, "b": [1.0, None]}


def test_a_runs_row_says_how_it_stopped():
    row = {"stop_reason": "kept_floor", "restored_step": 0, "config": {"stop_rule": "kept"}}
    assert runs.run_stop(row) == Stop(StopReason.KEPT_FLOOR, Restored(RestoreRule.KEPT, 0))
    held = {"stop_reason": "max_steps", "restored_step": 7, "config": {"stop_rule": "heldout"}}
    assert runs.run_stop(held).restored == Restored(RestoreRule.HELDOUT, 7)
    old = {"stop_reason": "max_steps; restored step 29 (14/16 fixed)", "config": {}}  # a row of an earlier version
    assert runs.run_stop(old).restored_step == 29
    assert runs.run_stop({"stop_reason": None, "config": {}}) is None
    assert runs.run_stop({"stop_reason": "cancelled before it started", "config": {}}) is None


def test_each_method_is_registered_once_with_the_words_the_pages_show():
    en = catalog("en")
    for name, spec in SPECS.items():
        assert en[spec.title_key] == spec.title, name
        for s in config_schema(name):
            if s["name"] != "strength":  # the Repair page shows strength as its slider, with words of its own
                assert en[setting_help_key(s["name"])] == s["help"], (name, s["name"])


def test_renamed_settings_accept_their_old_names():
    assert make_config("lora", {"alpha": 8}).scale == 8.0
    side = make_config("side_tuning", {"alpha_mode": "fixed", "alpha_end": 0.3})
    assert (side.blend, side.base_weight) == ("fixed", 0.3)
    with pytest.raises(UserError, match="no setting 'alpha'"):
        make_config("side_tuning", {"alpha": 0.3})
    # a run request stored by an earlier version, with the old name, still runs
    old = json.dumps({"method": "lora", "settings": {"alpha": 2.0, "rank": 2}, "data": {"counterexamples": "x"}})
    assert RunRequest.from_json(old).config.scale == 2.0
    assert RunRequest.build("lora", {"scale": 2.0}, DataRefs("x")).settings()["scale"] == 2.0


def test_effective_keep_floor_and_backtracks_of_every_method():
    """What the loop uses: the method's own config (it used to probe with defaults that never applied)."""
    for name in SPECS:
        cfg = make_config(name)
        floor, backtracks = (0.99, 6) if name == "cpt" else (0.97, 0)
        assert (cfg.keep_floor, cfg.backtracks) == (floor, backtracks), name
        assert (strength_of(cfg) is None) == (name not in ("cpt", "l2sp", "mas")), name
    assert math.isclose(make_config("cpt").keep_floor, 0.99)


def test_the_runs_table_keeps_the_reason_and_the_step_and_old_stores_gain_the_column(tmp_path):
    import sqlite3

    from core.app.store import Store

    store = Store(tmp_path / "home")
    pid = store.create_project("p", "alice")
    mid = store.add_model(pid, "base", "m", store.home, {}, {})
    rid = store.create_run(pid, mid, "cpt", {"stop_rule": "kept"}, "1000", 4, store.home, "alice")
    store.queue_run(rid, store.home)
    stop = Stop(StopReason.KEPT_FLOOR, Restored(RestoreRule.KEPT, 0, 3, 16))
    assert store.finish_run(rid, "done", stop_reason=stop.reason.value, restored_step=stop.restored_step)
    row = store.run(rid)
    assert (row["stop_reason"], row["restored_step"]) == ("kept_floor", 0)
    assert runs.run_stop(row) == Stop(StopReason.KEPT_FLOOR, Restored(RestoreRule.KEPT, 0))
    with sqlite3.connect(store.db_path) as con:  # as a store of the schema version before the column had it
        con.execute("ALTER TABLE runs DROP COLUMN restored_step")
        con.execute("DELETE FROM schema_version WHERE version >= 10")  # the later migrations run again, unharmed
    again = Store(store.home)
    assert again.run(rid)["restored_step"] is None and again.run(rid)["stop_reason"] == "kept_floor"
