"""User strings shown as plain text: never Markdown in a page, never HTML in a chart.

Class names, attributes, file names, project names, comments and error messages (which quote file
names) come from users. Streamlit renders most text (``st.write``, ``st.caption``, ``st.info``, button
and pill labels) as Markdown, so ``![](http://…)`` would load an outside image and ``[text](url)`` or
a bare URL would become a live link; plotly renders a few HTML tags (``<a href>``, ``<b>``) in
labels and hover text. :func:`md` and :func:`plot_text` make a user string inert in each. The HTML
report escapes everything with :func:`html.escape`.
"""

from __future__ import annotations

import html
import re

# Characters that start Markdown or HTML syntax anywhere in a line: links and images ([ ] ( ) !), HTML
# and autolinks (< > & : @), emphasis and code (* ` ~), Streamlit's :color[…] and $LaTeX$, tables (|).
_ALWAYS = frozenset("\\`*{}[]()<>#!|~$:&@^")
_LINE_START = re.compile(r"^([-+=>]|\d+(?=[.)]))")
_WWW = re.compile(r"(?i)\b(www)\.")


def md(value: object) -> str:
    """``value`` as Markdown that renders as exactly its text, so a user's string can never become a
    link, an image, HTML or formatting. Line breaks become spaces (no headings or lists); characters
    that start Markdown syntax are backslash-escaped (CommonMark allows escaping any ASCII
    punctuation); ``_`` only where it could start emphasis (``num_classes`` stays as it is); ``www.``
    is broken so it is not auto-linked; a leading list or quote marker is escaped."""
    text = " ".join(str(value).split())
    out = []
    for i, ch in enumerate(text):
        if ch in _ALWAYS:
            out.append("\\" + ch)
        elif ch == "_" and not (0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()):
            out.append("\\_")
        else:
            out.append(ch)
    escaped = _WWW.sub(r"\1\\.", "".join(out))
    return _LINE_START.sub(lambda m: "\\" + m.group(1) if not m.group(1).isdigit() else m.group(1) + "\\", escaped)


def plot_text(value: object) -> str:
    """``value`` as text for a plotly label or hover: HTML special characters escaped."""
    return html.escape(str(value), quote=True)
