"""The audit log for the History page: which rows it shows (scope and filters), the table as people
read it, and the CSV download."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable

import pandas as pd

from core.app import display, runs
from core.app.accounts import User
from core.app.store import Store
from core.app.store.audit_log import ChainBreak
from core.engine.configs import setting_key


def chain_alarm(store: Store, t: Callable[..., str]) -> str | None:
    """The alarm to show when the audit log's hash chain is broken (``Store.audit_chain_break``), in the
    language of ``t``; None when it holds."""
    return break_text(store.audit_chain_break(), t)


def break_text(broken: ChainBreak | None, t: Callable[..., str]) -> str | None:
    """What a break of the audit log's chain means, in the language of ``t``; None for no break."""
    if broken is None:
        return None
    return t(f"audit_chain_{broken.kind}", row=broken.row_id if broken.row_id is not None else "-")


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


def scope_project(user: User, project_id: int | None, scope: str) -> int | None:
    """The project whose rows the History page shows for ``scope`` (``project`` or ``all``), None for
    every project. A demo session sees its project's rows only, whatever the scope."""
    if user.demo:
        scope = "project"
    return project_id if scope == "project" and project_id is not None else None


def filter_frame(
    frame: pd.DataFrame, actions: Iterable[str] = (), who: Iterable[str] = (), text: str = ""
) -> pd.DataFrame:
    """The rows of ``frame`` that match every filter given: one of ``actions``, by one of ``who``, and
    ``text`` in the details (any case, as plain text). An empty filter matches every row."""
    actions, who = list(actions), list(who)
    shown = frame
    if actions:
        shown = shown[shown["action"].isin(actions)]
    if who:
        shown = shown[shown["who"].isin(who)]
    if text:
        shown = shown[shown["details"].str.contains(text, case=False, regex=False)]
    return shown


SETTINGS_KEY = "config"  # the detail that holds a repair's settings (a run_queued row)
PERCENT_KEYS = ("accuracy", "worst_group", "kept_decisions")  # shares (0..1) read as percentages
MAX_LISTED = 4  # items of a list named in the details column, then "+N"
CODED = ("four_eyes", "verdict", "cause")  # details stored as a code, read through ``detail_<key>_<code>``
# Stores from before the cause was a code wrote a rejection's rollback as this English sentence; audit rows never change,
# so History reads that sentence as the code it stands for.
OLD_REJECTED = re.compile(r"run (\d+) was rejected")


def _value_words(key: str, value: object, t: Callable[..., str]) -> str:
    """One detail's value for people: shares as percentages, numbers as settings read, hashes cut short."""
    if isinstance(value, bool):
        return "✓" if value else "✗"
    if isinstance(value, float) and key.startswith(PERCENT_KEYS) and 0 <= value <= 1:
        return display.percent(value)
    if isinstance(value, int) and "bytes" in key:
        return f"{display.mebibytes(value)} MB"
    if isinstance(value, int):
        return f"{value:,}"  # a count: 7,000 images, not 7e3
    if isinstance(value, float):
        return display.number(value)
    if isinstance(value, str) and key == "stop_reason":
        return runs.stop_words({"stop_reason": value}, t)
    if isinstance(value, str) and key == "method":  # a repair method, named as the Repair page names it
        label = t(f"method_{value}")
        return value if label == f"method_{value}" else label
    if isinstance(value, str) and key in CODED:
        label = t(f"detail_{key}_{value}")
        return value if label == f"detail_{key}_{value}" else label
    if isinstance(value, str) and "sha256" in key:
        return value[:12] + "…"
    if isinstance(value, list):
        shown = ", ".join(_value_words(key, v, t) for v in value[:MAX_LISTED])
        return shown + (f" +{len(value) - MAX_LISTED}" if len(value) > MAX_LISTED else "")
    if isinstance(value, dict):
        return "{" + details_words(value, t, settings=key == SETTINGS_KEY) + "}"
    return "–" if value is None or value == "" else str(value)


def _key_words(key: str, t: Callable[..., str], settings: bool = False) -> str:
    """A detail's name in words: a repair setting as the Repair page's settings form names it, any other
    key by its ``detail_<key>`` entry; the key itself, spaced, where the catalogue has neither."""
    catalogue_key = setting_key(key) if settings else f"detail_{key}"
    label = t(catalogue_key)
    return key.replace("_", " ") if label == catalogue_key else label


def _detail_parts(detail: dict, t: Callable[..., str], settings: bool = False) -> list[tuple[str, str, str, object]]:
    """(key, name in words, value in words, the stored value) for each detail: a ``x_before`` and ``x_after`` pair
    as one change, each key in words where the catalogue has them (``detail_<key>``; with ``settings``, a
    repair's settings, named as the Repair page's settings form names them, ``cfg_<name>``)."""
    parts = []
    old = OLD_REJECTED.fullmatch(str(detail.get("reason", "")))
    if old and "cause" not in detail:
        detail = {**{k: v for k, v in detail.items() if k != "reason"}, "run_id": int(old[1]), "cause": "rejected"}
    for key, value in detail.items():
        if key.endswith("_after") and key.removesuffix("_after") + "_before" in detail:
            continue
        if key.endswith("_before") and (base := key.removesuffix("_before")) + "_after" in detail:
            after = detail[base + "_after"]
            words = f"{_value_words(key, value, t)} → {_value_words(key, after, t)}"
            parts.append((key, _key_words(base, t, settings), words, value))
            continue
        parts.append((key, _key_words(key, t, settings), _value_words(key, value, t), value))
    return parts


def details_words(detail: dict, t: Callable[..., str], settings: bool = False) -> str:
    """An audit row's details in plain words on one line (``accuracy: 80.0% → 85.9% · repair: 3``), as
    :func:`_detail_parts` names and reads them."""
    return " · ".join(f"{name}: {words}" for _, name, words, _ in _detail_parts(detail, t, settings))


def record_items(detail: dict, t: Callable[..., str]) -> list[tuple[str, str | list[tuple[str, str]]]]:
    """A picked row's details for its full view, one item per detail: (name, value) in words, and for a detail
    that holds several (a repair's settings) (name, [(name, value), …]), each named as the table names it."""
    items: list[tuple[str, str | list[tuple[str, str]]]] = []
    for key, name, words, value in _detail_parts(detail, t):
        if isinstance(value, dict):
            items.append((name, [(n, w) for _, n, w, _ in _detail_parts(value, t, key == SETTINGS_KEY)]))
        else:
            items.append((name, words))
    return items


def table(frame: pd.DataFrame, t: Callable[..., str], tz: str | None) -> pd.DataFrame:
    """The rows as the page shows them, newest first: number, local time (the zone named in the heading),
    who, what in words, and the details in words, under translated headings."""
    frame = frame.iloc[::-1]
    return pd.DataFrame(
        {
            "id": frame["id"].to_list(),
            t("history_col_when", zone=display.zone_name(tz)): [
                display.local_time(w, tz, with_zone=False, seconds=True) for w in frame["when"]
            ],
            t("history_col_who"): frame["who"].to_list(),
            t("history_col_what"): [t(f"action_{a}") for a in frame["action"]],
            t("history_col_details"): [details_words(json.loads(d), t) for d in frame["details"]],
        }
    )


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
