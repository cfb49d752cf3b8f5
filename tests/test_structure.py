"""Measured from the code (issue #11): the dataset's constructor stays small, its modules and
classes stay within bounds, and no code outside the policy module compares policy names."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import driftloader as dl
from driftloader.policy import POLICIES

PACKAGE = Path(dl.__file__).parent


def test_the_dataset_constructor_has_at_most_20_parameters():
    parameters = inspect.signature(dl.DriftDataset.__init__).parameters
    assert len(parameters) - 1 <= 20  # self aside


def test_modules_and_classes_stay_within_bounds():
    for path in PACKAGE.rglob("*.py"):
        source = path.read_text()
        assert len(source.splitlines()) <= 700, path.name
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef):
                assert node.end_lineno - node.lineno + 1 <= 400, (path.name, node.name)


def test_no_module_imports_a_private_name_from_another():
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                private = [a.name for a in node.names if _is_private(a.name)]
                assert not private, f"{path.name} imports {private} from {node.module}"


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_every_module_states_its_job():
    for path in PACKAGE.rglob("*.py"):
        assert ast.get_docstring(ast.parse(path.read_text())), f"{path.name} has no docstring"


def test_no_policy_name_is_compared_outside_the_policy_module():
    names = "|".join(POLICIES)
    literal = rf"""["']({names})["']"""
    compared = re.compile(rf"(==|!=|\bin)\s*\(?[^#\n]*{literal}|{literal}\s*(==|!=)")
    for path in PACKAGE.rglob("*.py"):
        if path.name == "policy.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if compared.search(line) and "policy" in line.lower():
                raise AssertionError(f"{path.name}:{number} compares a policy name: {line}")
