"""The documents match the code: docs/CORE_API.md names each function in the module that defines it, every
``core.…`` name and ``core/…`` path the docs mention exists, and every package's docstring lists its modules."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE_API = ROOT / "docs" / "CORE_API.md"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
HEADING = re.compile(r"^### `(core/[\w/]+\.py)`")
FIRST_NAME = re.compile(r"^- `([A-Za-z_]\w*)")
DOTTED = re.compile(r"`(core(?:\.\w+)+)")
PATH = re.compile(r"\b(core/[\w/]+\.py)\b")


def _module(path: str):
    name = path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    return importlib.import_module(name)


def _defined_in(module, name: str) -> bool:
    """``name`` is defined in ``module`` (or re-exported by a package through ``__all__``), not merely imported."""
    if not hasattr(module, name):
        return False
    obj = getattr(module, name)
    home = getattr(obj, "__module__", None)
    return home in (None, module.__name__) or name in getattr(module, "__all__", ())


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for k in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ImportError:
            continue
        try:
            for attr in parts[k:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def test_core_api_names_each_function_in_its_module():
    wrong, module, checked = [], None, 0
    for n, line in enumerate(CORE_API.read_text(encoding="utf-8").splitlines(), start=1):
        if line.startswith("#"):
            m = HEADING.match(line)
            module = _module(m.group(1)) if m else None
            continue
        m = FIRST_NAME.match(line)
        if module is not None and m:
            checked += 1
            if not _defined_in(module, m.group(1)):
                wrong.append(f"CORE_API.md:{n} {m.group(1)} is not defined in {module.__name__}")
    assert checked > 30 and wrong == []


def test_every_core_name_and_path_in_the_docs_exists():
    missing = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        missing += [f"{doc.name}: {d}" for d in sorted(set(DOTTED.findall(text))) if not _resolves(d)]
        missing += [f"{doc.name}: {p}" for p in sorted(set(PATH.findall(text))) if not (ROOT / p).is_file()]
    assert missing == []


def test_every_package_docstring_lists_its_modules():
    unlisted = []
    for init in sorted((ROOT / "core").rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        pkg = init.parent
        names = [p.stem for p in pkg.glob("*.py") if p.stem != "__init__"]
        names += [d.name for d in pkg.iterdir() if (d / "__init__.py").is_file()]
        unlisted += [f"{pkg.relative_to(ROOT)}: {m}" for m in sorted(names) if f"``{m}``" not in doc]
    assert unlisted == []
