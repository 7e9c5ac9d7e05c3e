"""Both sides of a repair: the verdict's kinds and rules, groups worse beyond their interval, varied
samples, the verdict's words, the summary card and the report's static chart fallback."""

from __future__ import annotations

import plotly.graph_objects as go

from core.app import charts, summary, verdict
from core.app.i18n import translator
from core.app.staticchart import figure_svg


def _g(label, attr, acc, lo, hi, n=300):
    return {
        "label": label,
        "attribute": attr,
        "accuracy": acc,
        "count": n,
        "correct": round(acc * n),
        "ci_low": lo,
        "ci_high": hi,
    }


def _metrics(after_two_red=0.71, kept=0.95, acc_after=0.86):
    before = {
        "accuracy": 0.80,
        "worst_group_accuracy": 0.15,
        "bias_gap": 0.83,
        "min_group_count": 10,
        "groups": [
            _g("two", "red", 0.98, 0.96, 0.995),
            _g("seven", "red", 0.15, 0.11, 0.19),
            _g("two", "blue", 0.97, 0.95, 0.99),
        ],
    }
    after = {
        "accuracy": acc_after,
        "worst_group_accuracy": 0.49,
        "bias_gap": 0.48,
        "min_group_count": 10,
        "groups": [
            _g("two", "red", after_two_red, 0.66, 0.76),
            _g("seven", "red", 0.49, 0.44, 0.55),
            _g("two", "blue", 0.965, 0.94, 0.98),
        ],
    }
    return {
        "before": before,
        "after": after,
        "kept_decisions": kept,
        "changed_predictions": 900,
        "n_fixed": 512,
        "n_broken": 383,
        "errors_corrected": 0.4,
        "errors_introduced": 1 - kept,
    }


def test_a_group_worse_beyond_its_interval_is_named_with_the_losses():
    v = verdict.judge(_metrics())
    assert v.kind == "mixed"  # better worst group, but a group got worse: not a green "Recommended"
    assert [c.name for c in v.worse_groups] == ["two · red"]  # two · blue moved within its range
    assert v.biggest_gain.name == "seven · red" and v.biggest_loss.name == "two · red"
    text = summary.verdict_text(v, translator("en"))
    assert "two · red 98% → 71%" in text and "383 answers that were right are now wrong" in text
    assert "512 answers fixed" in text
    ja = summary.verdict_text(v, translator("ja"))
    assert "two · red 98% → 71%" in ja and "383" in ja


def test_no_worse_group_keeps_recommended_and_says_nothing_was_lost_beyond_noise():
    v = verdict.judge(_metrics(after_two_red=0.97))
    assert v.kind == "improved" and v.worse_groups == ()
    assert "no group got worse beyond its 95% range" in summary.verdict_text(v, translator("en"))


def test_a_flag_is_explained_by_what_was_lost():
    v = verdict.judge(_metrics(kept=0.874))
    assert v.kind == "flagged" and v.reasons == (verdict.Reason.KEPT_LOW,) and v.flagged
    text = summary.verdict_text(v, translator("en"))
    assert text.startswith("Careful")
    assert "only 87.4% of the answers that were right stay right, under the 90%" in text
    assert "383 right answers were lost to fix 512" in text


def test_no_change_reason_is_shown_plainly():
    m = _metrics(after_two_red=0.98)
    m["after"] = m["before"]
    m.update(changed_predictions=0, n_fixed=0, n_broken=0, kept_decisions=1.0)
    m["no_change"] = {"code": "auto_no_change", "reason": "every strength tried made the held-out worst group worse"}
    v = verdict.judge(m)
    assert v.kind == "unchanged"
    assert "Why: every strength tried made the held-out worst group worse" in summary.verdict_text(v, translator("en"))


def test_varied_sample_spreads_over_groups_and_answers_not_sorted_by_label():
    items = [
        {"label": lab, "attribute": a, "after": ans, "i": i}
        for i, (lab, a, ans) in enumerate(
            [("eight", "red", "eight")] * 40
            + [("two", "blue", "two")] * 5
            + [("two", "red", "seven")] * 3
            + [("two", "red", "two")] * 3
        )
    ]
    sample = summary.varied_sample(items, 8)
    assert len(sample) == 8
    groups = {(s["label"], s["attribute"]) for s in sample}
    assert groups == {("eight", "red"), ("two", "blue"), ("two", "red")}
    assert {s["after"] for s in sample if s["label"] == "two" and s["attribute"] == "red"} == {"seven", "two"}
    assert summary.varied_sample(items, 8) == sample  # the same run always shows the same sample


def test_summary_card_has_the_four_numbers_and_the_biggest_gain_and_loss():
    m = _metrics()
    v = verdict.judge(m)
    card = summary.summary_card_html(m, v, translator("en"), verdict="VERDICT")
    for needed in (
        "80.0%",
        "86.0%",
        "15.0%",
        "49.0%",
        "95.0%",
        "383 right answers broken",
        "VERDICT",
        "Biggest gain: seven · red 15% → 49%",
        "Biggest loss: two · red 98% → 71%",
    ):
        assert needed in card, needed
    assert "font-size:42px" in card


def test_charts_use_no_red_or_blue_and_name_groups_on_the_axis():
    m = _metrics()
    t = translator("en")
    fig = charts.old_new_bars(m["before"], m["after"], t)
    colours = {tr.marker.color for tr in fig.data}
    assert colours == {charts.OLD_COLOUR, charts.NEW_COLOUR}
    assert all(c not in {"#d62728", "#1f77b4", "red", "blue"} for c in colours)
    assert "two · red<br>n=300" in list(fig.data[0].x)
    assert fig.layout.font.size >= 14 and fig.layout.xaxis.tickfont.size >= 14
    trade = charts.tradeoff(
        [
            {"run_id": 1, "strength": "1000", "kept": 0.9, "worst_group": 0.4},
            {"run_id": 2, "strength": "300", "kept": 0.95, "worst_group": 0.3},
        ],
        t,
        highlight=1,
    )
    assert [tr.name for tr in trade.data] == ["other repairs", "this repair"]
    bars = charts.group_bars(m["after"], t)
    assert {tr.name for tr in bars.data} == {"more than 10 points below overall accuracy", "other groups"}
    assert all(tr.textposition == "inside" for tr in bars.data)  # values inside, n= under the name


def test_static_svg_fallback_draws_names_values_and_titles():
    m = _metrics()
    t = translator("en")
    svg = figure_svg(charts.old_new_bars(m["before"], m["after"], t))
    assert svg.startswith("<svg") and "two · red n=300" in svg and ">98<" in svg and "Accuracy (%)" in svg
    heat = figure_svg(charts.accuracy_heatmap(m["before"], t))
    assert ">98%<" in heat and ">seven<" in heat
    assert "<svg" in figure_svg(go.Figure(go.Scatter(x=[1, 2], y=[3, 4], mode="lines")))


def test_every_kind_of_verdict_has_one_look_and_words_in_both_languages():
    tones = {"success", "warning", "info", "error"}
    for kind in verdict.Kind:
        assert kind.look.tone in tones and kind.look.icon and kind.look.background.startswith("#")
        for lang in ("en", "ja"):
            assert translator(lang)(kind.key) != kind.key
    assert verdict.Kind.FLAGGED.look.tone == "error" and verdict.Kind.IMPROVED.look.tone == "success"
    assert len({k.look.icon for k in verdict.Kind}) == len(verdict.Kind)  # an icon tells each kind apart
    for reason in verdict.Reason:
        assert translator("ja")(reason.key) != reason.key


def test_the_card_draws_the_verdict_in_the_colours_of_its_kind_and_the_rules_it_used(monkeypatch):
    m = _metrics(kept=0.874)
    v = verdict.judge(m)
    card = summary.summary_card_html(m, v, translator("en"), verdict="WORDS")
    look = verdict.Kind.FLAGGED.look
    assert f"background:{look.background};border-left:8px solid {look.border}" in card and "WORDS" in card
    assert 'class="verdict"' not in summary.summary_card_html(m, v, translator("en"))
    rules = summary.rules_text(v, translator("en"))
    assert "more than 2 points" in rules and "fewer than 90.0% of right decisions" in rules
    monkeypatch.setattr(verdict, "MIN_KEPT_DECISIONS", 0.8)  # the rules shown are the rules applied
    v = verdict.judge(m)
    assert v.kind == "mixed" and "fewer than 80.0%" in summary.rules_text(v, translator("en"))


def test_counts_text_says_how_many_answers_changed():
    text = summary.counts_text(_metrics(), translator("en"))
    # Every changed answer is accounted for: 900 = 512 + 383 + 5.
    assert text.startswith("900 test images changed their answer: 512 fixed, 383 broken, 5 from one wrong answer to")
    assert "Errors corrected: 40.0%" in text and "fewer than 10 images" in text


def test_the_verdict_never_contradicts_itself_on_a_group():
    """A group that rounds to the same whole percent is shown with decimals, and a loss inside its 95% range
    is said to be inside it, beside a verdict that says no group got worse beyond its range."""
    m = _metrics()
    m["before"]["groups"][0] = _g("two", "red", 1.0, 1.0, 1.0)
    m["after"]["groups"][0] = _g("two", "red", 0.9967, 0.99, 1.0)
    m["after"]["groups"][2] = _g("two", "blue", 0.96, 0.94, 0.98)  # down 1 point, inside its range
    v = verdict.judge(m)
    t = translator("en")
    words = summary.verdict_text(v, t)
    assert "two · red 100.0% → 99.7%" in words  # worse beyond its range: the move is visible
    assert "100% → 100%" not in words
    m["after"]["groups"][0] = _g("two", "red", 1.0, 1.0, 1.0)
    v = verdict.judge(m)
    assert "no group got worse beyond its 95% range" in summary.verdict_text(v, t)
    card = summary.summary_card_html(m, v, t)
    assert "Biggest loss: two · blue 97% → 96% (-1.0 points, within its 95% range" in card
