"""Collect the translation keys the workbench uses (for tests/test_i18n.py).

Literal keys are read from every ``t("...")`` call in app.py, views/ and the core modules that
draw text. Keys built at run time (``t(f"status_{s}")``) are listed from their known value sets.
"""

from __future__ import annotations

import ast
from pathlib import Path

from core.app.verdict import Kind, Reason

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [
    ROOT / "app.py",
    *sorted((ROOT / "views").glob("*.py")),
    ROOT / "core" / "app" / "baseline.py",
    ROOT / "core" / "app" / "budget.py",
    ROOT / "core" / "app" / "charts.py",
    ROOT / "core" / "app" / "history.py",
    ROOT / "core" / "app" / "report.py",
    ROOT / "core" / "app" / "review.py",
    ROOT / "core" / "app" / "server_start.py",
    ROOT / "core" / "app" / "summary.py",
    ROOT / "core" / "engine" / "model_card.py",
]

DYNAMIC = {
    "status": ["preparing", "queued", "running", "cancelling", "done", "failed", "cancelled", "interrupted"],
    "decision": ["approved", "rejected", "none", "in_use", "rolled_back"],
    "verdict": [k.value for k in Kind],
    "verdict_reason": [r.value for r in Reason],
    "tune_ended": ["failed", "interrupted", "cancelled"],
    "ce_show": ["all", "todo", "done"],
    "stop": [
        "max_steps",
        "all_fixed",
        "diverged",
        "heldout_patience",
        "cancelled",
        "kept_floor",
        "auto_no_change",
        "stalled",
        "interpolated",
    ],
    "history_scope": ["project", "all"],
    "upload": ["curators_only", "not_in_demo"],  # core.app.uploads.no_upload_key
    "phase": ["queued", "preparing", "choosing", "tuning", "cancelling"],
    "tune_phase": ["queued", "preparing", "cancelling"],
    "action": [
        "open_demo",
        "demo_reset",
        "demo_sandbox_deleted",
        "upload_model",
        "upload_eval",
        "upload_pool",
        "upload_reference",
        "upload_images",
        "group_named",
        "label_added",
        "label_changed",
        "label_removed",
        "run_queued",
        "run_cancel_requested",
        "run_done",
        "run_failed",
        "run_cancelled",
        "run_interrupted",
        "run_interpolated",
        "approved",
        "rejected",
        "rolled_back",
        "exported",
        "report",
        "forbidden",
        "user_created",
        "roles_changed",
        "password_reset",
        "signed_in",
        "signed_out",
        "sign_in_failed",
        "sign_in_locked",
        "sign_in_refused_disabled",
        "account_disabled",
        "account_enabled",
        "four_eyes_relaxed",
        "four_eyes_restored",
    ],
    "role": ["curator", "approver", "admin"],
    "admin_four_eyes": ["relax", "restore", "relaxed", "kept", "now_relaxed", "restored"],
    "review_export_needs_approver": ["demo"],
    "baseline": ["none_in_use", "is_this_run", "other_rows"],
}


def literal_keys() -> set[str]:
    keys = set()
    for src in SOURCES:
        for node in ast.walk(ast.parse(src.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "t"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                keys.add(node.args[0].value)
    return keys


def used_keys() -> set[str]:
    keys = literal_keys()
    for prefix, values in DYNAMIC.items():
        keys.update(f"{prefix}_{v}" for v in values)
    return keys


if __name__ == "__main__":
    print(" ".join(sorted(used_keys())))
