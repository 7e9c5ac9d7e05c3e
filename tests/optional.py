"""Optional test dependencies: their tests are skipped where one is missing, except in CI.

A developer without playwright, ray or hypothesis installed still gets every other test: a test file
that needs one calls :func:`need` before importing it (``tests/e2e/conftest.py`` does it for the whole
browser folder), and pytest skips that file. In CI (``CI=true``, as ``.ci/run`` is run) a missing one is
an error instead, so CI can never pass by skipping the browser or Ray tests. ``tests/test_suite_setup.py``
checks both, and that every test file importing one of them goes through :func:`need`.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

OPTIONAL = ("playwright", "ray", "hypothesis")


def in_ci() -> bool:
    """Whether the tests run in CI: ``CI`` set to true (``1``, ``yes``), as CI services and ``.ci/run`` set it."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def need(module: str) -> ModuleType:
    """Import ``module``. Missing on a developer's machine: skip the calling test file (or, from a
    conftest, its folder), through ``pytest.importorskip``. Missing in CI: raise ImportError, which
    fails the run."""
    if not in_ci():
        return pytest.importorskip(module, reason=f"{module} is not installed (requirements-dev.txt); CI runs these")
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{module} is needed by the tests and CI never skips them: pip install -r requirements-dev.txt ({exc})"
        ) from exc
