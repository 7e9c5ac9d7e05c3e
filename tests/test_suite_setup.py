"""The test suite's own set-up: the ``e2e`` marker, and optional packages that skip locally but fail in CI.

Each check runs pytest in a fresh process on a few files, as a developer or CI would; missing packages
are simulated by a package of the same name, first on ``PYTHONPATH``, that fails to import.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.optional import OPTIONAL, in_ci, need

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
# One file per optional package (in the order of OPTIONAL), and one plain test file.
NEEDING = ["tests/e2e/test_local_time_browser.py", "tests/test_backends.py", "tests/test_fuzz.py"]
PLAIN = "tests/test_penalties.py"


def _pytest(args: list[str], ci: bool, blocked: tuple[str, ...] = (), tmp: Path | None = None):
    """pytest in a fresh process; each ``blocked`` package is shadowed by one that fails to import."""
    env = {k: v for k, v in os.environ.items() if k != "CI" and not k.startswith("PYTEST_")}
    if ci:
        env["CI"] = "true"
    if blocked:
        for name in blocked:
            (tmp / name).mkdir(parents=True)
            message = f"No module named {name!r}"
            (tmp / name / "__init__.py").write_text(f"raise ModuleNotFoundError({message!r}, name={name!r})\n")
        env["PYTHONPATH"] = os.pathsep.join([str(tmp), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    plugins = ["-p", "no:hypothesispytest"] if "hypothesis" in blocked else []  # hypothesis's own pytest plugin
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", *plugins, "-q", "-rs", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)


def test_the_e2e_marker_selects_exactly_the_browser_tests():
    files = [NEEDING[0], PLAIN]
    fast = _pytest(["--collect-only", "-m", "not e2e", *files], ci=False)
    assert fast.returncode == 0, fast.stdout + fast.stderr
    ids = [line for line in fast.stdout.splitlines() if "::" in line]
    assert ids and all(i.startswith(PLAIN) for i in ids), ids
    browser = _pytest(["--collect-only", "-m", "e2e", *files], ci=False)
    ids = [line for line in browser.stdout.splitlines() if "::" in line]
    assert ids and all(i.startswith("tests/e2e/") for i in ids), browser.stdout + browser.stderr


def test_a_missing_optional_package_skips_its_tests_and_nothing_else(tmp_path):
    proc = _pytest(["--collect-only", *NEEDING, PLAIN], ci=False, blocked=OPTIONAL, tmp=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "error" not in out.lower(), out
    for name in OPTIONAL:
        assert f"{name} is not installed" in out, out  # each file says why it was skipped
    ids = [line for line in proc.stdout.splitlines() if "::" in line]
    assert ids and all(i.startswith(PLAIN) for i in ids), ids


@pytest.mark.parametrize(("name", "path"), list(zip(OPTIONAL, NEEDING, strict=True)))
def test_in_ci_a_missing_optional_package_fails_the_run(name, path, tmp_path):
    proc = _pytest(["--collect-only", path, PLAIN], ci=True, blocked=(name,), tmp=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert f"{name} is needed by the tests and CI never skips them" in out, out  # named, with what to do


def test_need_skips_locally_and_raises_in_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    assert not in_ci()
    assert need("json").__name__ == "json"
    with pytest.raises(pytest.skip.Exception):
        need("no_such_package_for_this_test")
    monkeypatch.setenv("CI", "true")
    assert in_ci() and need("json").__name__ == "json"
    with pytest.raises(ImportError, match="CI never skips"):
        need("no_such_package_for_this_test")


def _top_level_imports(tree: ast.Module) -> list[tuple[int, str]]:
    out = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.append((node.lineno, node.module.split(".")[0]))
    return out


def _need_calls(tree: ast.Module) -> dict[str, int]:
    """Module-level ``need("pkg")`` calls (also as ``x = need("pkg")``): package → line."""
    calls = {}
    for node in tree.body:
        value = node.value if isinstance(node, ast.Expr | ast.Assign) else None
        if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "need" and value.args:
            calls[value.args[0].value.split(".")[0]] = node.lineno
    return calls


def test_every_test_file_imports_optional_packages_through_need():
    bad = []
    for f in sorted(TESTS.rglob("*.py")):
        tree = ast.parse(f.read_text(encoding="utf-8"))
        needed = _need_calls(tree)
        if f.parent == TESTS / "e2e" and f.name.startswith("test_") and "playwright" not in needed:
            bad.append(f"{f.relative_to(ROOT)} drives the browser without need('playwright')")
        for line, pkg in _top_level_imports(tree):
            if pkg in OPTIONAL and (pkg not in needed or needed[pkg] > line):
                bad.append(f"{f.relative_to(ROOT)}:{line} imports {pkg} without need({pkg!r}) before it")
    assert bad == []
