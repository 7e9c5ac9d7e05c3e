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


def history_csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode("utf-8")
