"""Both sides of a repair in plain words: what was gained and what was lost.

From a run's metrics (``before``/``after`` group metrics of :mod:`core.engine.metrics` and the
comparison counts) this module finds the groups that got better or worse *beyond their interval*
(the repaired accuracy lies outside the old model's bootstrap 95% range), the biggest gain and the
biggest loss by group, a varied sample of changed images (spread over groups and answers, never
sorted by label), the verdict sentences, and the one-screen before/after summary card that the
Review page and the HTML report both show. Plain data in, strings out; no torch.
"""

from __future__ import annotations

import html
import math
import random
from collections.abc import Callable

from core.app import display

MAX_NAMED_GROUPS = 3  # the verdict names at most this many worse groups, then "and N more"


def group_name(g: dict) -> str:
    """A group as people read it: ``two · red`` (just the label when there is no attribute)."""
    a = g.get("attribute")
    return f"{g['label']} · {a}" if a not in (None, "", "(none)") else str(g["label"])


def _num(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def group_changes(before: dict, after: dict) -> list[dict]:
    """Per group: old and new accuracy, the change, and whether it moved beyond its interval.

    ``worse`` when the repaired accuracy is below the old model's 95% interval for that group,
    ``better`` when above it. Without an interval (no bootstrap) the point estimate is the interval.
    """
    new = {(g["label"], str(g["attribute"])): g for g in after.get("groups", [])}
    out = []
    for g in before.get("groups", []):
        a = new.get((g["label"], str(g["attribute"])))
        if a is None:
            continue
        acc_b, acc_a = g["accuracy"], a["accuracy"]
        lo = _num(g.get("ci_low"))
        hi = _num(g.get("ci_high"))
        lo = acc_b if lo is None else lo
        hi = acc_b if hi is None else hi
        out.append(
            {
                "name": group_name(g),
                "label": g["label"],
                "attribute": g["attribute"],
                "count": g["count"],
                "before": acc_b,
                "after": acc_a,
                "delta": acc_a - acc_b,
                "worse": acc_a < lo,
                "better": acc_a > hi,
            }
        )
    return out


def both_sides(metrics: dict) -> dict:
    """What was gained and what was lost: counts, worse/better groups, biggest gain and loss."""
    changes = group_changes(metrics.get("before", {}), metrics.get("after", {}))
    worse = sorted((c for c in changes if c["worse"]), key=lambda c: c["delta"])
    better = sorted((c for c in changes if c["better"]), key=lambda c: -c["delta"])
    gains = [c for c in changes if c["delta"] > 0]
    losses = [c for c in changes if c["delta"] < 0]
    return {
        "n_fixed": int(metrics.get("n_fixed", 0) or 0),
        "n_broken": int(metrics.get("n_broken", 0) or 0),
        "worse_groups": worse,
        "better_groups": better,
        "biggest_gain": max(gains, key=lambda c: c["delta"]) if gains else None,
        "biggest_loss": min(losses, key=lambda c: c["delta"]) if losses else None,
    }


def varied_sample(items: list[dict], n: int, seed: int = 0) -> list[dict]:
    """Up to ``n`` items spread over groups and answers: one from each (label, attribute) group in
    turn, and within a group one from each new answer in turn. The order of groups is shuffled with
    a fixed seed, so the same run always shows the same sample, and no label comes first by name."""
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for it in items:
        by_answer = groups.setdefault((it.get("label"), str(it.get("attribute", ""))), {})
        by_answer.setdefault(str(it.get("after")), []).append(it)
    rng = random.Random(seed)
    keys = sorted(groups, key=str)
    rng.shuffle(keys)
    queues = []
    for k in keys:
        answers = sorted(groups[k])
        rng.shuffle(answers)
        lists = [list(groups[k][a]) for a in answers]
        merged = []
        while any(lists):
            for lst in lists:
                if lst:
                    merged.append(lst.pop(0))
        queues.append(merged)
    out: list[dict] = []
    limit = min(n, len(items))
    while len(out) < limit and any(queues):
        for q in queues:
            if q and len(out) < limit:
                out.append(q.pop(0))
    return out


# ---- words ---------------------------------------------------------------------------------------
def pct(x: float | None) -> str:
    x = _num(x)
    return "–" if x is None else f"{100 * x:.1f}%"


def pct0(x: float | None) -> str:
    x = _num(x)
    return "–" if x is None else f"{100 * x:.0f}%"


def points(x: float | None) -> str:
    x = _num(x)
    return "–" if x is None else f"{100 * x:+.1f}"


def _group_move(c: dict) -> str:
    return f"{c['name']} {pct0(c['before'])} → {pct0(c['after'])}"


def verdict_text(v: dict, t: Callable[..., str], auto_strength=None) -> str:
    """The plain verdict: what was gained, what was lost (groups worse beyond their interval, answers
    broken), and for a flagged run why, in terms of what was lost. Built only from the numbers in ``v``
    (:func:`core.app.runs.verdict`)."""
    fields = {
        "wb_before": pct(v["worst_before"]),
        "wb_after": pct(v["worst_after"]),
        "acc_change": points(v["accuracy_change"]),
        "kept": pct(v["kept"]),
        "fixed": v.get("n_fixed", 0),
        "broken": v.get("n_broken", 0),
    }
    parts = [t(f"verdict_{v['kind']}", **fields)]
    if v.get("no_change"):
        parts.append(t("verdict_no_change_reason", reason=v["no_change"].words(t)))
    if v["kind"] != "unchanged":
        worse = v.get("worse_groups") or []
        if worse:
            named = ", ".join(_group_move(c) for c in worse[:MAX_NAMED_GROUPS])
            if len(worse) > MAX_NAMED_GROUPS:
                named = t("verdict_and_more", groups=named, n=len(worse) - MAX_NAMED_GROUPS)
            parts.append(t("verdict_losses_groups", broken=fields["broken"], n=len(worse), groups=named))
        else:
            parts.append(t("verdict_losses_none", broken=fields["broken"]))
    for reason in v["reasons"]:
        parts.append(
            t(
                f"verdict_reason_{reason}",
                max_drop=f"{100 * v['max_drop']:.0f}",
                min_kept=pct0(v["min_kept"]),
                kept=pct(v["kept"]),
                drop=f"{-100 * v['accuracy_change']:.1f}",
                broken=fields["broken"],
                fixed=fields["fixed"],
            )
        )
    if auto_strength is not None:
        parts.append(t("verdict_auto_chose", strength=display.number(auto_strength)))
    return " ".join(parts)


KIND_COLOURS = {  # background, border: the verdict box of the report and the card
    "improved": ("#e8f5ee", "#1a7f5a"),
    "mixed": ("#fff6e0", "#b36b00"),
    "partial": ("#eef3fb", "#3c6fb4"),
    "flagged": ("#fdecea", "#b3261e"),
    "no_gain": ("#fff6e0", "#b36b00"),
    "unchanged": ("#f1f3f5", "#6c757d"),
}


def summary_card_html(metrics: dict, v: dict, t: Callable[..., str], verdict: str | None = None) -> str:
    """The one-screen before/after card: the four numbers (old → new, in large type), optionally the
    verdict, and the biggest gain and the biggest loss by group. Inline styles only, so the same
    HTML works in the page and in the offline report."""
    e = html.escape
    before, after = metrics["before"], metrics["after"]

    def tile(name: str, new: str, note: str, change: float | None = None, good: bool | None = None) -> str:
        """One number: its name, the new value in large type, and under it the old value and the
        change (the arrow follows the number, the colour says whether that is good)."""
        colour = "#444" if good is None else ("#1a7f5a" if good else "#b3261e")
        delta = ""
        if change is not None and abs(change) >= 0.0005:
            arrow = "▲" if change > 0 else "▼"
            delta = (
                f' <span style="color:{colour};font-weight:700;white-space:nowrap">{arrow} '
                f"{e(t('card_points', value=f'{100 * change:+.1f}'))}</span>"
            )
        return (
            '<div style="flex:1 1 0;min-width:150px;padding:8px 14px;border:1px solid #d0d4d9;border-radius:8px;'
            'background:#fff">'
            f'<div style="font-size:17px;color:#333;font-weight:600;line-height:1.25">{e(name)}</div>'
            f'<div style="font-size:42px;line-height:1.15;font-weight:700;color:#111">{e(new)}</div>'
            f'<div style="font-size:16px;color:#333;line-height:1.3">{e(note)}{delta}</div></div>'
        )

    def diff(a, b) -> float | None:
        a, b = _num(a), _num(b)
        return None if a is None or b is None else a - b

    tiles = []
    d = diff(after["accuracy"], before["accuracy"])
    tiles.append(
        tile(t("metric_accuracy"), pct(after["accuracy"]), t("card_was", value=pct(before["accuracy"])), d, _good(d))
    )
    wb_b, wb_a = before.get("worst_group_accuracy"), after.get("worst_group_accuracy")
    d = diff(wb_a, wb_b)
    tiles.append(tile(t("metric_worst_group"), pct(wb_a), t("card_was", value=pct(wb_b)), d, _good(d)))
    gap_b, gap_a = _num(before.get("bias_gap")), _num(after.get("bias_gap"))
    d = diff(gap_a, gap_b)
    tiles.append(
        tile(
            t("metric_bias_gap"),
            "–" if gap_a is None else f"{100 * gap_a:.1f}",
            t("card_was", value="–" if gap_b is None else f"{100 * gap_b:.1f}"),
            d,
            _good(None if d is None else -d),
        )
    )
    kept = _num(metrics.get("kept_decisions"))
    tiles.append(tile(t("metric_kept"), pct(kept), t("card_broken", n=v.get("n_broken", 0))))
    gain, loss = v.get("biggest_gain"), v.get("biggest_loss")
    gain_txt = e(t("card_gain", group=_group_move(gain), delta=points(gain["delta"])) if gain else t("card_no_gain"))
    loss_txt = e(t("card_loss", group=_group_move(loss), delta=points(loss["delta"])) if loss else t("card_no_loss"))
    box = ""
    if verdict is not None:
        bg, border = KIND_COLOURS.get(v["kind"], KIND_COLOURS["unchanged"])
        box = (
            f'<div class="verdict" style="font-size:20px;line-height:1.4;padding:14px 18px;border-radius:8px;'
            f'background:{bg};border-left:8px solid {border};color:#111;margin-bottom:12px">{e(verdict)}</div>'
        )
    return (
        '<div class="summary-card" style="font-family:system-ui,\'Noto Sans CJK JP\',sans-serif;margin:4px 0 8px">'
        f"{box}"
        f'<div style="display:flex;flex-wrap:wrap;gap:10px">{"".join(tiles)}</div>'
        '<div style="display:flex;flex-wrap:wrap;gap:12px;margin-top:10px;font-size:19px;line-height:1.3">'
        f'<div style="flex:1 1 0;min-width:260px;padding:8px 14px;border-left:8px solid #1a7f5a;background:#f3faf6">'
        f"{gain_txt}</div>"
        f'<div style="flex:1 1 0;min-width:260px;padding:8px 14px;border-left:8px solid #b3261e;background:#fdf3f2">'
        f"{loss_txt}</div></div></div>"
    )


def _good(d: float | None) -> bool | None:
    if d is None or abs(d) < 0.0005:
        return None
    return d > 0
