"""The README's Limits table lists every cap a user can hit, once, with the figure the code uses: an
environment variable's default from core/settings.py, a fixed cap's constant, Streamlit's upload size from
.streamlit/config.toml."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

from core import settings

ROOT = Path(__file__).resolve().parent.parent
UNITS = {"": 1, "MB": 2**20, "bytes": 1, "characters": 1}
VALUE = re.compile(r"^(\d+)(?: (MB|bytes|characters))?$")
# Every cap in the code that refuses what a user hands in (environment variables aside: every
# BIASREPAIR_* cap in core/formats/limits.py is checked below through core.settings).
FIXED_CAPS = {
    "core.app.uploads.MAX_POOL_ZIP_BYTES",
    "core.formats.meta.MAX_MODEL_BYTES",
    "core.formats.meta.MAX_META_BYTES",
    "core.formats.meta.MAX_BUNDLE_ZIP_ENTRIES",
    "core.formats.libmeta.MAX_LIBRARY_ZIP_ENTRIES",
    "core.formats.manifest.MAX_MANIFEST_BYTES",
    "core.formats.manifest.MAX_PATH_BYTES",
    "core.formats.limits.MAX_CLASSES",
    "core.formats.limits.MAX_INPUT_SIDE",
    "core.formats.limits.MAX_INPUT_PIXELS",
    "core.formats.zipsafety.DEFAULT_MAX_FILES",
    "core.formats.zipsafety.MAX_NAME_BYTES",
    "core.formats.zipsafety.MAX_NAME_PART_BYTES",
    "core.app.naming.MAX_NAME_CHARS",
    "server.maxUploadSize",
}
ENV_CAPS = {
    "BIASREPAIR_MAX_UNZIPPED_MB",
    "BIASREPAIR_MAX_IMAGES",
    "BIASREPAIR_MAX_IMAGE_PIXELS",
    "BIASREPAIR_STORE_BUDGET_MB",
    "BIASREPAIR_EVAL_BATCH",
}


def limits_rows() -> list[tuple[list[str], str]]:
    """(the names in the first column, the figure) of each row of the README's Limits table."""
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("### Limits\n", 1)[1]
    rows = []
    for line in section.splitlines():
        if rows and not line.startswith("|"):
            break
        if line.startswith("|") and not line.startswith(("| setting", "|---")):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows.append((re.findall(r"`([^`]+)`", cells[0]), cells[1]))
    return rows


def _code_value(name: str) -> int:
    if name in settings.ALL:
        return settings.ALL[name].default
    if name == "server.maxUploadSize":
        config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
        return config["server"]["maxUploadSize"] * 2**20  # Streamlit counts it in MB
    module, attr = name.rsplit(".", 1)
    return getattr(importlib.import_module(module), attr)


def test_every_figure_in_the_limits_table_is_the_codes():
    wrong = []
    for names, figure in limits_rows():
        m = VALUE.match(figure)
        assert m, f"{figure!r}: a figure is a whole number, with MB, bytes or characters"
        documented = int(m.group(1)) * UNITS[m.group(2) or ""]
        code = [n for n in names if n in settings.ALL or n.startswith("core.") or n == "server.maxUploadSize"]
        assert code, f"row {names}: names no setting or constant"
        wrong += [f"{n}: README {documented}, code {_code_value(n)}" for n in code if _code_value(n) != documented]
    assert wrong == []


def test_every_cap_a_user_can_hit_is_in_the_table_once():
    listed = [n for names, _ in limits_rows() for n in names]
    missing = sorted((FIXED_CAPS | ENV_CAPS) - set(listed))
    twice = sorted({n for n in listed if listed.count(n) > 1})
    assert missing == [] and twice == []
