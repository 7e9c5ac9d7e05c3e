"""Both sides of a repair in words: the verdict sentences and the one-screen before/after summary card
that the Review page and the HTML report both show, the rules and counts under them, and a varied
sample of changed images (spread over groups and answers, never sorted by label).

The numbers come from :func:`core.app.verdict.judge` and the run's metrics; this module only words
and draws them, with the formatters of :mod:`core.app.display`. Plain data in, strings out; no torch.
"""

from __future__ import annotations

import html
import random
from collections.abc import Callable

from core.app import display
from core.app.display import percent, points
from core.app.verdict import GroupChange, Kind, Verdict

MAX_NAMED_GROUPS = 3  # the verdict names at most this many worse groups, then "and N more"


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
def _group_move(c: GroupChange) -> str:
    """``name 26% → 15%``; with decimals where whole percents would hide the move (``100.0% → 99.6%``)."""
    digits = 0
    while digits < 2 and c.delta != 0 and percent(c.before, digits) == percent(c.after, digits):
        digits += 1
    return f"{c.name} {percent(c.before, digits)} → {percent(c.after, digits)}"


def _losses(v: Verdict, t: Callable[..., str]) -> str:
    """What was lost: the answers broken, and the groups worse beyond their interval (at most
    MAX_NAMED_GROUPS named, then "and N more")."""
    if not v.worse_groups:
        return t("verdict_losses_none", broken=v.n_broken)
    named = ", ".join(_group_move(c) for c in v.worse_groups[:MAX_NAMED_GROUPS])
    if len(v.worse_groups) > MAX_NAMED_GROUPS:
        named = t("verdict_and_more", groups=named, n=len(v.worse_groups) - MAX_NAMED_GROUPS)
    return t("verdict_losses_groups", broken=v.n_broken, n=len(v.worse_groups), groups=named)


def verdict_text(v: Verdict, t: Callable[..., str], auto_strength=None) -> str:
    """The plain verdict: what was gained, what was lost (groups worse beyond their interval, answers
    broken), and for a flagged repair why, in terms of what was lost. Built only from the numbers in
    ``v`` (:func:`core.app.verdict.judge`)."""
    parts = [
        t(
            v.kind.key,
            wb_before=percent(v.worst_before),
            wb_after=percent(v.worst_after),
            acc_change=points(v.accuracy_change, signed=True),
            kept=percent(v.kept),
            fixed=v.n_fixed,
            broken=v.n_broken,
        )
    ]
    if v.no_change:
        parts.append(t("verdict_no_change_reason", reason=v.no_change.words(t)))
    if v.kind is not Kind.UNCHANGED:
        parts.append(_losses(v, t))
    for reason in v.reasons:
        parts.append(
            t(
                reason.key,
                max_drop=points(v.max_drop, 0),
                min_kept=percent(v.min_kept, 0),
                kept=percent(v.kept),
                drop=points(-v.accuracy_change),
                broken=v.n_broken,
                fixed=v.n_fixed,
            )
        )
    if auto_strength is not None:
        parts.append(t("verdict_auto_chose", strength=display.number(auto_strength)))
    return " ".join(parts)


def rules_text(v: Verdict, t: Callable[..., str]) -> str:
    """The rules the verdict ``v`` applied, in a sentence (shown under the card)."""
    return t("review_thresholds", max_drop=points(v.max_drop, 0), min_kept=percent(v.min_kept))


def counts_text(metrics: dict, t: Callable[..., str]) -> str:
    """How many test answers changed, were fixed, broken or went from one wrong answer to another, and the smallest group counted."""
    return t(
        "review_counts",
        changed=metrics["changed_predictions"],
        fixed=metrics.get("n_fixed", 0),
        broken=metrics.get("n_broken", 0),
        other=metrics["changed_predictions"] - metrics.get("n_fixed", 0) - metrics.get("n_broken", 0),
        corrected=percent(metrics["errors_corrected"]),
        introduced=percent(metrics["errors_introduced"]),
        min_group=metrics["before"]["min_group_count"],
    )


def check_text(metrics: dict, t: Callable[..., str]) -> str | None:
    """The check split beside the reported numbers, never mixed with them: how many evaluation images steered the
    repair (and are in no reported number), and its numbers there (core.engine.guard); None for a run without one."""
    split = metrics.get("split")
    if not split or not split.get("check"):
        return None
    source = t(f"review_check_source_{split['source']}")
    text = t("review_check_split", check=split["check"], source=source, reported=split["reported"])
    check = metrics.get("check")
    if check:
        b, a = check["base"], check["score"]
        text += " " + t(
            "review_check_scores",
            wg_before=percent(b["worst_group"]),
            wg_after=percent(a["worst_group"]),
            acc_before=percent(b["accuracy"]),
            acc_after=percent(a["accuracy"]),
            kept=percent(a["kept"]),
            step=check["step"],
            alpha=percent(check["alpha"]),
        )
    return text


# ---- the card ------------------------------------------------------------------------------------
def _good(d: float | None) -> bool | None:
    if d is None or abs(d) < 0.0005:
        return None
    return d > 0


def _diff(a, b) -> float | None:
    a, b = display.finite(a), display.finite(b)
    return None if a is None or b is None else a - b


def _tile_html(t: Callable[..., str], name: str, new: str, note: str, change: float | None, good: bool | None) -> str:
    """One number: its name, the new value in large type, and under it the old value and the change
    (the arrow follows the number; the colour says whether the change is ``good``)."""
    e = html.escape
    colour = "#444" if good is None else ("#1a7f5a" if good else "#b3261e")
    delta = ""
    if change is not None and abs(change) >= 0.0005:
        arrow = "▲" if change > 0 else "▼"
        delta = (
            f' <span style="color:{colour};font-weight:700;white-space:nowrap">{arrow} '
            f"{e(t('card_points', value=points(change, signed=True)))}</span>"
        )
    return (
        '<div style="flex:1 1 0;min-width:150px;padding:8px 14px;border:1px solid #d0d4d9;border-radius:8px;'
        'background:#fff">'
        f'<div style="font-size:17px;color:#333;font-weight:600;line-height:1.25">{e(name)}</div>'
        f'<div style="font-size:42px;line-height:1.15;font-weight:700;color:#111">{e(new)}</div>'
        f'<div style="font-size:16px;color:#333;line-height:1.3">{e(note)}{delta}</div></div>'
    )


def _tiles(metrics: dict, v: Verdict, t: Callable[..., str]) -> list[str]:
    """The four numbers: accuracy, worst-group accuracy, bias gap (smaller is better) and kept
    decisions (with the answers broken)."""
    before, after = metrics["before"], metrics["after"]
    acc_d = _diff(after["accuracy"], before["accuracy"])
    wb_b, wb_a = before.get("worst_group_accuracy"), after.get("worst_group_accuracy")
    wb_d = _diff(wb_a, wb_b)
    gap_b, gap_a = before.get("bias_gap"), after.get("bias_gap")
    gap_d = _diff(gap_a, gap_b)
    return [
        _tile_html(
            t,
            t("metric_accuracy"),
            percent(after["accuracy"]),
            t("card_was", value=percent(before["accuracy"])),
            acc_d,
            _good(acc_d),
        ),
        _tile_html(t, t("metric_worst_group"), percent(wb_a), t("card_was", value=percent(wb_b)), wb_d, _good(wb_d)),
        _tile_html(
            t,
            t("metric_bias_gap"),
            points(gap_a),
            t("card_was", value=points(gap_b)),
            gap_d,
            _good(None if gap_d is None else -gap_d),
        ),
        _tile_html(
            t, t("metric_kept"), percent(metrics.get("kept_decisions")), t("card_broken", n=v.n_broken), None, None
        ),
    ]


def _verdict_box(v: Verdict, words: str) -> str:
    look = v.kind.look
    return (
        f'<div class="verdict" style="font-size:20px;line-height:1.4;padding:14px 18px;border-radius:8px;'
        f'background:{look.background};border-left:8px solid {look.border};color:#111;margin-bottom:12px">'
        f"{html.escape(words)}</div>"
    )


def _gain_and_loss(v: Verdict, t: Callable[..., str]) -> str:
    """The biggest gain and the biggest loss by group, side by side."""
    e = html.escape
    gain, loss = v.biggest_gain, v.biggest_loss
    gain_txt = e(
        t("card_gain", group=_group_move(gain), delta=points(gain.delta, signed=True)) if gain else t("card_no_gain")
    )
    # A loss inside the group's 95% range says so, beside a verdict that names only losses beyond it.
    loss_key = "card_loss" if loss is None or loss.worse else "card_loss_within"
    loss_txt = e(
        t(loss_key, group=_group_move(loss), delta=points(loss.delta, signed=True)) if loss else t("card_no_loss")
    )
    return (
        '<div style="display:flex;flex-wrap:wrap;gap:12px;margin-top:10px;font-size:19px;line-height:1.3">'
        f'<div style="flex:1 1 0;min-width:260px;padding:8px 14px;border-left:8px solid #1a7f5a;background:#f3faf6">'
        f"{gain_txt}</div>"
        f'<div style="flex:1 1 0;min-width:260px;padding:8px 14px;border-left:8px solid #b3261e;background:#fdf3f2">'
        f"{loss_txt}</div></div>"
    )


def summary_card_html(metrics: dict, v: Verdict, t: Callable[..., str], verdict: str | None = None) -> str:
    """The one-screen before/after card: the four numbers (old → new, in large type), optionally the
    verdict's words in the colours of its kind, and the biggest gain and the biggest loss by group.
    Inline styles only, so the same HTML works in the page and in the offline report."""
    box = "" if verdict is None else _verdict_box(v, verdict)
    return (
        '<div class="summary-card" style="font-family:system-ui,\'Noto Sans CJK JP\',sans-serif;margin:4px 0 8px">'
        f"{box}"
        f'<div style="display:flex;flex-wrap:wrap;gap:10px">{"".join(_tiles(metrics, v, t))}</div>'
        f"{_gain_and_loss(v, t)}</div>"
    )
