"""Which audit rows the History page shows, and how (core/app/history.py): its scope (a demo session
sees its own project only), its filters, the table as people read it and the CSV."""

from __future__ import annotations

import pandas as pd

from core.app import history
from core.app.accounts import User
from core.app.i18n import translator

ROWS = pd.DataFrame(
    [
        (1, "2026-11-30T10:30:01Z", "alice", 1, "label_added", '{"label": "two"}'),
        (2, "2026-11-30T10:31:02Z", "mia", 1, "approved", '{"comment": "Fine for the PILOT", "run_id": 1}'),
        (3, "2026-11-30T20:00:00Z", "alice", 2, "label_added", '{"label": "seven"}'),
    ],
    columns=["id", "when", "who", "project", "action", "details"],
)


def test_a_demo_session_sees_its_project_only_whatever_the_scope():
    person, demo = User("mia", ["approver"]), User("demo", ["curator"], demo=True)
    assert history.scope_project(person, 3, "project") == 3
    assert history.scope_project(person, 3, "all") is None
    assert history.scope_project(person, None, "project") is None  # no project open: every row
    assert history.scope_project(demo, 3, "all") == 3


def test_filters_match_every_given_filter_and_none_when_empty():
    assert list(history.filter_frame(ROWS)["id"]) == [1, 2, 3]
    assert list(history.filter_frame(ROWS, actions=["label_added"])["id"]) == [1, 3]
    assert list(history.filter_frame(ROWS, actions=["label_added"], who=["alice"], text="TWO")["id"]) == [1]
    assert list(history.filter_frame(ROWS, text="pilot")["id"]) == [2]
    assert list(history.filter_frame(ROWS, text="(")["id"]) == []  # plain text, not a pattern


def test_the_table_reads_in_local_time_and_words_and_the_csv_keeps_the_stored_rows():
    shown = history.filter_frame(ROWS, who=["alice"])
    table = history.table(shown, translator("ja"), "Asia/Tokyo")
    assert list(table.columns) == ["id", "日時（Asia/Tokyo）", "実行者", "操作", "詳細"]
    assert list(table["日時（Asia/Tokyo）"]) == ["2026-12-01 05:00:00", "2026-11-30 19:30:01"]  # newest first
    assert list(table["詳細"]) == ["ラベル: seven", "ラベル: two"]  # in words, not JSON
    assert set(table["操作"]) == {"画像にラベルを付けた"}
    csv = history.history_csv(shown).decode().splitlines()
    assert csv[0] == "id,when,who,project,action,details" and len(csv) == 3
    assert csv[2].startswith("3,2026-11-30T20:00:00Z,alice,2,label_added,")  # stored UTC, as recorded


def test_details_read_in_words_not_json():
    t = translator("en")
    words = history.details_words(
        {
            "accuracy_after": 0.8593333333333333,
            "accuracy_before": 0.8,
            "run_id": 3,
            "sha256": "ab" * 32,
            "roles": ["curator", "approver"],
            "override": False,
        },
        t,
    )
    assert (
        words == "accuracy: 80.0% → 85.9% · repair: 3 · SHA-256: abababababab… · roles: curator, approver · override: ✗"
    )
    assert "{" not in words and "0.859333" not in words


def test_a_picked_rows_record_lists_each_detail_and_each_setting_by_its_name():
    ja = translator("ja")
    detail = {"run_id": 3, "config": {"lr": 3e-5, "max_steps": 200, "check_floor": 0.97}, "accuracy_before": 0.8,
              "accuracy_after": 0.85, "labelled_by": {"alice": 2}}  # fmt: skip
    assert history.record_items(detail, ja) == [
        (ja("detail_run_id"), "3"),
        (ja("detail_config"), [(ja("cfg_lr"), "3e-5"), (ja("cfg_max_steps"), "200"), (ja("cfg_check_floor"), "0.97")]),
        (ja("detail_accuracy"), "80.0% → 85.0%"),
        (ja("detail_labelled_by"), [("alice", "2")]),  # names, not settings: as they are
    ]


def _audit_detail_names() -> set[str]:
    """Every detail name the code writes into an audit row: each keyword of a ``.audit(…)`` or
    ``.audit_refusal(…)`` call under core/, and the names of the dicts some calls spread in."""
    import ast
    from pathlib import Path

    names = set()
    for path in Path(history.__file__).parents[1].rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("audit", "audit_refusal"):
                names |= {kw.arg for kw in node.keywords if kw.arg is not None}
    spread = {
        "labels", "runs", "groups",  # sandboxes.what_reset_loses
        "models", "datasets",  # sandboxes: a deleted sandbox's counts
        "registered_model", "version", "alias", "model_id",  # mlflow_registry's sync result
        "sha256", "accuracy_before", "accuracy_after", "worst_group_before", "worst_group_after",
        "kept_decisions", "strength", "steps", "device",  # worker's summary of a finished run
    }  # fmt: skip
    return names | spread


def test_every_detail_the_code_records_has_a_name_in_each_language():
    from core.app.i18n import LANGUAGES

    names = _audit_detail_names()
    assert {"copied_from", "architecture", "reused", "stop_reason", "run_id"} <= names  # the scan finds them
    for lang in LANGUAGES:
        t = translator(lang)
        paired = {n.removesuffix("_before").removesuffix("_after") for n in names}  # read as one change
        missing = sorted(n for n in paired if t(f"detail_{n}") == f"detail_{n}")
        assert missing == [], f"{lang}: details shown by their stored name: {missing}"


def test_coded_details_and_the_stop_read_in_words():
    ja = translator("ja")
    detail = {
        "four_eyes": "relaxed",
        "verdict": "improved",
        "stop_reason": "check_patience; restored step 15 (check split, α 1)",
        "method": "cpt",
    }
    words = dict(history.record_items(detail, ja))
    assert words[ja("detail_method")] == ja("method_cpt") != "cpt"  # the method as the Repair page names it
    assert words[ja("detail_four_eyes")] == ja("detail_four_eyes_relaxed") == "緩められていた"
    assert words[ja("detail_verdict")] == "推奨"
    assert history.details_words({"cause": "rejected"}, ja) == "理由: 使用中の修復が却下された"
    # a rollback written by an older store, as an English sentence, reads as the new rows do
    assert history.details_words({"reason": "run 7 was rejected"}, ja) == history.details_words(
        {"run_id": 7, "cause": "rejected"}, ja
    )
    assert history.details_words({"reason": "run 7 was rejected, and more"}, ja).endswith(
        "run 7 was rejected, and more"
    )
    assert words[ja("detail_stop_reason")] == ja("stop_check_patience") + " · " + ja("stop_restored", step=15)
    assert "check_patience" not in history.details_words(detail, ja)
    sizes = history.details_words({"bytes": 113_400, "bytes_freed": 3 * 2**20, "images": 100_000}, ja)
    assert sizes == ja("detail_bytes") + ": 0.1 MB · " + ja("detail_bytes_freed") + ": 3.0 MB · " + (
        ja("detail_images") + ": 100,000"
    )  # sizes in MB and counts in full, never 1.134e5
    odd = {"verdict": "a kind from a later version", "stop_reason": "not a stop line", "method": "gone"}
    assert history.details_words(odd, ja) == (
        "判定: a kind from a later version · 止まった理由: not a stop line · " + ja("detail_method") + ": gone"
    )
