"""User strings shown as plain text: never Markdown in a page, never HTML in a chart.

Class names, attributes, file names, project names, comments and error messages (which quote file
names) come from users. Streamlit renders most text (``st.write``, ``st.caption``, ``st.info``, button
and pill labels) as Markdown, so ``![](http://…)`` would load an outside image and ``[text](url)`` or
a bare URL would become a live link; plotly renders a few HTML tags (``<a href>``, ``<b>``) in
labels and hover text. :func:`md` and :func:`plot_text` make a user string inert in each, and
:func:`short` cuts a long name for a chart axis (the full name goes in the hover). The HTML
report escapes everything with :func:`html.escape`.

Backslash escapes are not enough for bare URLs: Streamlit's Markdown (remark-gfm) finds literal
autolinks (``http://…``, ``https://…``, ``www.…``, ``name@host.tld``) in the text *after* escapes are
resolved, so :func:`md` also puts an invisible WORD JOINER (U+2060) inside each such pattern
(``http⁠://``, ``www⁠.``, ``mail⁠@``): the text reads the same and no longer matches.
"""

from __future__ import annotations

import html
import re

# Characters that start Markdown or HTML syntax anywhere in a line: links and images ([ ] ( ) !), HTML
# and autolinks (< > & : @), emphasis and code (* ` ~), Streamlit's :color[…] and $LaTeX$, tables (|).
_ALWAYS = frozenset("\\`*{}[]()<>#!|~$:&@^")
_LINE_START = re.compile(r"^([-+=>]|\d+(?=[.)]))")
JOINER = "\u2060"  # WORD JOINER: invisible, and no autolink pattern matches across it
_AUTOLINK = re.compile(r"(?i)((?:https?|ftp|mailto|xmpp)(?=:)|www(?=\.)|[^\s@](?=@))")


def md(value: object) -> str:
    """``value`` as Markdown that renders as exactly its text, so a user's string can never become a
    link, an image, HTML or formatting. Line breaks become spaces (no headings or lists); characters
    that start Markdown syntax are backslash-escaped (CommonMark allows escaping any ASCII
    punctuation); ``_`` only where it could start emphasis (``num_classes`` stays as it is); a bare
    URL, ``www.`` or e-mail address gets an invisible word joiner so it is not auto-linked (see the
    module's text); a leading list or quote marker is escaped."""
    text = _AUTOLINK.sub(lambda m: m.group(1) + JOINER, " ".join(str(value).split()))
    out = []
    for i, ch in enumerate(text):
        if ch in _ALWAYS:
            out.append("\\" + ch)
        elif ch == "_" and not (0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()):
            out.append("\\_")
        else:
            out.append(ch)
    escaped = "".join(out)
    return _LINE_START.sub(lambda m: "\\" + m.group(1) if not m.group(1).isdigit() else m.group(1) + "\\", escaped)


def plot_text(value: object) -> str:
    """``value`` as text for a plotly label or hover, drawn exactly as its characters.

    Only ``&``, ``<`` and ``>`` are escaped: that is enough to stop a tag, and plotly.js turns
    ``&amp;``, ``&lt;`` and ``&gt;`` back into their characters. Quotes stay as they are, because
    plotly does not decode ``&quot;`` or ``&#x27;``-style names it does not know and would draw them
    literally (``&quot;``)."""
    return html.escape(str(value), quote=False)


def short(value: object, limit: int = 18) -> str:
    """``value`` cut to ``limit`` characters with an ellipsis, for an axis label; the whole text
    belongs in the hover."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
