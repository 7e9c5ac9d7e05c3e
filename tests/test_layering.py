"""Layering (docs/ARCHITECTURE.md): which package may import which, no import loops, no hidden imports.

* core never imports streamlit; app.py, the pages (views/) and the server's guards (serving/) never import torch,
  and the page process never loads it at run time either (model computation happens in the worker);
* core/engine and core/formats never import core/app or core/bench; core/app never imports core/bench;
* the import graph of core/ has no cycle;
* no import inside a function, except the optional heavy dependencies listed in LAZY_ALLOWED.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE_FILES = sorted((ROOT / "core").rglob("*.py"))

# Imported inside a function on purpose: optional or heavy, and needed by one path only.
LAZY_ALLOWED = {
    "torchvision.models",  # only when a torchvision architecture is built (the demo's CNN needs none)
    "torchvision.transforms.v2",  # only when a repair augments; it imports torch._dynamo (about a second)
    "plotly.graph_objects",  # only when the benchmark writes its interactive figure
    "plotly.subplots",
    "ray",  # only with the ray backend (core.engine.backends); the local backend needs no Ray
    # only for a timm or transformers folder (core/formats/libraries.py); importing transformers takes seconds
    "timm",
    "transformers",
    "transformers.models.auto.configuration_auto",
    "transformers.models.auto.modeling_auto",
    # only for an ONNX export and its check (core/engine/onnx_export.py)
    "onnx",
    "onnxruntime",
    "mlflow",  # only when the MLflow registry is on (core/app/mlflow_registry.py), in the task worker
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(node: ast.ImportFrom, module: str, is_pkg: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Fully qualified modules imported by a file (``from core.app import jobs`` gives core.app.jobs)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    module, is_pkg = _module_name(path), path.name == "__init__.py"
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            mod = _resolve(node, module, is_pkg)
            out.add(mod)
            for a in node.names:  # a submodule imported by name
                candidate = f"{mod}.{a.name}"
                if (ROOT / Path(*candidate.split("."))).with_suffix(".py").is_file():
                    out.add(candidate)
    return out


def _roots(mods: set[str]) -> set[str]:
    return {m.split(".")[0] for m in mods}


def test_core_never_imports_streamlit():
    assert CORE_FILES
    offenders = [str(f.relative_to(ROOT)) for f in CORE_FILES if "streamlit" in _roots(_imports(f))]
    assert offenders == []


def test_no_pages_folder_beside_app_py():
    """The pages live in views/: Streamlit treats a folder named pages/ beside the entry script as an
    old-style multipage app until st.navigation has run once, so the first page URL typed or reloaded
    after a server start ran the page file alone, without app.py (no sidebar, no language)."""
    assert not (ROOT / "pages").exists()
    assert {f.stem for f in (ROOT / "views").glob("*.py")} == {
        "model",
        "counterexamples",
        "tune",
        "review",
        "history",
        "admin",
        "signin",  # the sign-in form app.py draws while nobody is signed in
        "demo_sandbox",  # the demo session's reset control app.py draws in the sidebar
        "uploader",  # the file uploaders the Model and Counterexamples pages draw for people who may upload
    }


def test_pages_and_app_never_import_torch():
    files = [ROOT / "app.py", *sorted((ROOT / "views").glob("*.py")), *sorted((ROOT / "serving").glob("*.py"))]
    assert len(files) == 12
    heavy = {"torch", "torchvision", "safetensors"}
    offenders = [str(f.relative_to(ROOT)) for f in files if _roots(_imports(f)) & heavy]
    assert offenders == []


def _layer(mod: str) -> str | None:
    parts = mod.split(".")
    return (
        parts[1]
        if len(parts) > 1 and parts[0] == "core" and parts[1] in ("engine", "formats", "app", "bench")
        else None
    )


def test_layers_only_import_downwards():
    forbidden = {"engine": {"app", "bench"}, "formats": {"app", "bench", "engine"}, "app": {"bench"}}
    offenders = []
    for f in CORE_FILES:
        layer = _layer(_module_name(f))
        for mod in _imports(f):
            if layer in forbidden and _layer(mod) in forbidden[layer]:
                offenders.append(f"{_module_name(f)} imports {mod}")
    assert offenders == []


def test_every_layer_says_what_it_holds_and_may_import():
    for layer in ("engine", "formats", "app", "bench"):
        doc = ast.get_docstring(ast.parse((ROOT / "core" / layer / "__init__.py").read_text(encoding="utf-8")))
        assert doc and "may import" in doc, layer


def _graph() -> dict[str, set[str]]:
    known = {_module_name(f) for f in CORE_FILES}
    return {_module_name(f): {m for m in _imports(f) if m in known} for f in CORE_FILES}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_core_has_no_import_cycle():
    graph = _graph()
    assert "core.app.jobs" in graph and graph["core.app.worker"] >= {"core.app.jobs", "core.engine.repair"}
    assert _cycle(graph) is None


def test_no_imports_inside_functions():
    offenders = []
    for f in [*CORE_FILES, ROOT / "app.py", *sorted((ROOT / "views").glob("*.py"))]:
        tree = ast.parse(f.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    names = {a.name for a in node.names}
                elif isinstance(node, ast.ImportFrom):
                    names = {node.module or ""}
                else:
                    continue
                if not names <= LAZY_ALLOWED:
                    offenders.append(f"{f.relative_to(ROOT)}:{node.lineno} {', '.join(sorted(names))}")
    assert offenders == []


PAGE_PROCESS = """
import json, sys
from streamlit.testing.v1 import AppTest
from core.app import accounts, projects

store = projects.get_store()
admin = accounts.create_user(store, None, "layering-admin", "layering-Secret-1", accounts.ROLES)
pid = projects.open_demo(store, admin)
seen = {}
at = AppTest.from_file("app.py", default_timeout=600)
at.session_state["lang"] = "en"
at.session_state["auth_token"] = accounts.sign_in(store, "layering-admin", "layering-Secret-1")
at.run()
pages = ["model", "counterexamples", "tune", "review", "history", "admin"]
for page in [None, *(f"views/{p}.py" for p in pages)]:
    if page:
        at.switch_page(page)
    at.run()
    seen[page or "app.py"] = {
        "exceptions": [e.value for e in at.exception],
        "heavy": sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "safetensors")),
    }
print(json.dumps(seen))
"""


def test_page_process_never_loads_torch(tmp_path):
    """Every page, run as the Streamlit server runs it, on the demo: the page process holds no torch
    (the demo is built, evaluated and predicted by the task worker)."""
    env = {**os.environ, "BIASREPAIR_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", PAGE_PROCESS], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(seen) == {
        "app.py",
        *(f"views/{p}.py" for p in ("model", "counterexamples", "tune", "review", "history", "admin")),
    }
    for page, info in seen.items():
        assert info["exceptions"] == [], page
        assert info["heavy"] == [], (page, info["heavy"][:5])
