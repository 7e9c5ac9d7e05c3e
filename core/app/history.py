"""The audit log as a table and as CSV, for the History page."""

from __future__ import annotations

import json

import pandas as pd

from core.app.store import Store


def history_frame(store: Store, project_id: int | None = None) -> pd.DataFrame:
    """The audit log as a table (oldest first): when, who, what, and the details as JSON."""
    rows = [
        {
            "id": e["id"],
            "when": e["ts"],
            "who": e["actor"],
            "project": e["project_id"],
            "action": e["action"],
            "details": json.dumps(e["detail"], ensure_ascii=False, sort_keys=True),
        }
        for e in store.audit_events(project_id)
    ]
    return pd.DataFrame(rows, columns=["id", "when", "who", "project", "action", "details"])


FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n")


def csv_safe(value: object) -> object:
    """A cell a spreadsheet will not run: text starting with = + - @ (or a tab/newline) gets a leading
    apostrophe, the usual neutraliser (OWASP "CSV injection"). Numbers are left alone."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def history_csv(frame: pd.DataFrame) -> bytes:
    """The table as CSV, every text cell neutralised against spreadsheet formula injection."""
    safe = frame.copy()
    for col in safe.columns:
        safe[col] = safe[col].astype(object).map(csv_safe)
    safe.columns = [csv_safe(c) for c in safe.columns]
    return safe.to_csv(index=False).encode("utf-8")
