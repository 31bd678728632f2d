"""Shared test set-up: tests/ is importable (support modules, the lab fixture)."""

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
# The lab fixture is a plugin (tests/lab) and a helper module (tests/collection, tests/lab_e2e):
# marked before anything imports it, its asserts are rewritten wherever it comes first.
pytest.register_assert_rewrite("labfixture")
