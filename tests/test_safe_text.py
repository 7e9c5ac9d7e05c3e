"""User strings (class names, attributes, file names, comments) render as plain text in
pages (no Markdown links or images), charts (no plotly HTML) and the report (no HTML)."""

from __future__ import annotations

import io
import json
import re
from xml.etree import ElementTree

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.app import charts, compute, jobs, projects
from core.app.i18n import translator
from core.app.report import build_report
from core.app.safe_text import JOINER, md, plot_text
from core.app.staticchart import figure_svg
from core.formats.meta import BundleMeta
from tests.test_pages import APP
from tests.wb_helpers import ALICE, sign_in_app

HOSTILE = [
    "![](http://evil.example/pixel.png)",
    "[click me](http://evil.example)",
    '<a href="http://evil.example">x</a>',
    "http://evil.example/bare",
    "www.evil.example",
    "mail@evil.example",
    ":red[loud] $x^2$ **bold** _it_ `code`",
    "- a list\n# a heading",
]
DANGEROUS = set("[]()<>!:@`*$#")


def _unescaped(text: str) -> set[str]:
    """Characters that start Markdown syntax and are not backslash-escaped (``_`` unless intraword)."""
    stripped = re.sub(r"\\.", "", text)
    found = {c for c in stripped if c in DANGEROUS}
    if re.search(r"(^|[^0-9A-Za-z])_|_([^0-9A-Za-z]|$)", stripped):
        found.add("_")
    return found


@pytest.mark.parametrize("value", HOSTILE)
def test_md_leaves_no_markdown_syntax(value):
    out = md(value)
    assert _unescaped(out) == set(), out
    assert "\n" not in out
    assert "www." not in out.lower()
    # The text itself is unchanged, but for invisible word joiners inside autolink patterns.
    assert re.sub(r"\\(.)", r"\1", out).replace(JOINER, "") == " ".join(value.split())


# What remark-gfm (Streamlit's Markdown) turns into links in a text node, once escapes are resolved
# (mdast-util-gfm-autolink-literal): a backslash before ":" or "." does not stop these.
GFM_AUTOLINKS = [
    re.compile(r"(https?://|www(?=\.))([-.\w]+)([^ \t\r\n]*)", re.IGNORECASE),
    re.compile(r"([-.\w+]+)@([-\w]+(?:\.[-\w]+)+)"),
]


@pytest.mark.parametrize(
    "value",
    [
        "http://evil.example/bare",
        "see HTTPS://evil.example/x?y=1",
        "class_www.evil.example",
        "mail@evil.example",
        "a.b+c@evil.example.co",
        "group (http://evil.example)",
    ],
)
def test_md_leaves_no_bare_url_or_address_for_autolinking(value):
    shown = re.sub(r"\\(.)", r"\1", md(value))  # the text node the Markdown renderer sees
    assert not any(p.search(shown) for p in GFM_AUTOLINKS), shown
    assert shown.replace(JOINER, "") == value


def test_md_keeps_ordinary_names_readable():
    assert md("num_classes in model.safetensors") == "num_classes in model.safetensors"
    assert md("日本語のクラス") == "日本語のクラス"


def _metrics(names: list[str]) -> dict:
    groups = [
        {"label": n, "attribute": a, "accuracy": 0.5, "count": 10, "correct": 5, "ci_low": 0.2, "ci_high": 0.8}
        for n in names
        for a in names[:2]
    ]
    return {
        "groups": groups,
        "accuracy": 0.5,
        "worst_group_accuracy": 0.5,
        "bias_gap": 0.0,
        "min_group_count": 1,
    }


def test_charts_escape_html_in_user_strings():
    t = translator("en")
    m = _metrics(HOSTILE[:3])
    for fig in (charts.accuracy_heatmap(m, t), charts.group_bars(m, t), charts.old_new_bars(m, m, t)):
        data = json.dumps(fig.to_plotly_json()["data"])
        assert "<a href" not in data and "&lt;a href" in data
    # Quotes stay quotes: plotly.js draws ``&quot;`` literally (it decodes only &amp; &lt; &gt; and a few).
    assert plot_text('<a href="x">') == '&lt;a href="x"&gt;'
    assert plot_text("R&D's") == "R&amp;D's"


def test_report_escapes_user_strings(tmp_path):
    t = translator("en")
    img = tmp_path / "a.png"
    Image.new("RGB", (4, 4)).save(img)
    m = _metrics(HOSTILE[:3])
    metrics = {
        "before": m,
        "after": m,
        "kept_decisions": 1.0,
        "changed_predictions": 1,
        "errors_corrected": 0.0,
        "errors_introduced": 0.0,
    }
    changed = [
        {
            "file": str(img),
            "label": HOSTILE[2],
            "before": HOSTILE[0],
            "after": HOSTILE[1],
            "fixed": True,
            "broken": False,
        }
    ]
    html = build_report(
        title="r",
        run={"id": 1, "created_by": '<a href="http://evil.example">me</a>'},
        metrics=metrics,
        verdict_text="v",
        figures=[("heat", charts.accuracy_heatmap(m, t))],
        changed=changed,
        decision_lines=['<img src="http://evil.example/x.png"> said ok'],
        t=t,
        lang="en",
    )
    assert '<a href="http://evil.example"' not in html and '<img src="http://evil.example' not in html
    assert "&lt;a href=&quot;http://evil.example&quot;&gt;" in html


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (12, 12)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture()
def hostile_project(tmp_path, monkeypatch, tiny_bundle_dir):
    home = tmp_path / "home"
    monkeypatch.setenv("BIASREPAIR_HOME", str(home))
    store = projects.get_store(home)
    staged = store.artifact_dir("incoming") / "model_h"
    staged.mkdir()
    meta = BundleMeta.from_dict(
        {**json.loads((tiny_bundle_dir / "model.json").read_text()), "class_names": HOSTILE[:3]}
    )
    (staged / "model.json").write_text(json.dumps(meta.to_dict()))
    (staged / "model.safetensors").write_bytes((tiny_bundle_dir / "model.safetensors").read_bytes())
    payload = {"staged": str(staged), "filename": "[p](javascript:alert(1)).zip", "weights": "model.safetensors"}
    pid = compute.register_model(store, payload, ALICE)["project_id"]
    yield store, pid
    jobs.stop_spawned_workers()


def test_model_page_shows_hostile_names_as_plain_text(hostile_project, monkeypatch):
    store, pid = hostile_project
    at = sign_in_app(AppTest.from_file(APP, default_timeout=120), store)
    at.session_state["project_id"] = pid
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    shown = [
        str(e.value) for kind in ("markdown", "caption", "subheader", "info", "warning", "error") for e in at.get(kind)
    ]
    joined = "\n".join(shown)
    assert "evil" in joined  # the names are there ...
    for value in shown:
        # ... but never as live syntax: no unescaped link, image or tag
        assert not re.search(r"(?<!\\)\]\(|(?<!\\)<a |(?<!\\)!(?<!\\)\[|(?<!\\)\bhttp:", value), value
    assert md(HOSTILE[0]) in joined and md("[p](javascript:alert(1))") in joined


def test_static_chart_escapes_labels_once():
    """The report's SVG drawing reads plotly's text back to characters and escapes it once for SVG."""
    t = translator("en")
    m = _metrics(['say "hi"', "R&D <b>x</b>"])
    svg = figure_svg(charts.group_bars(m, t))
    texts = " ".join(e.text or "" for e in ElementTree.fromstring(svg).iter() if e.tag.endswith("text"))
    assert 'say "hi"' in texts and "R&D <b>x</b>" in texts and "&amp;" not in texts and "&quot;" not in texts
