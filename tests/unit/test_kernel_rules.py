"""The house rules, checked on the source: no service reaches into another's stored state.

Architecture rule 1: services never import each other, and a stored document that another
service reads is a declared contract (`cairn.contracts.state`, `cairn.artifacts`,
`cairn.datasets`). These tests fail when a service's code names another service's store prefix,
a kernel-private prefix, or decodes a stored document as a plain dict.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
from cairn.contracts.state import all_states
from cairn.namespaces import KERNEL_PREFIXES, PUBLISHED_NAMESPACES

REPO = Path(__file__).resolve().parents[2]
SERVICES_DIR = REPO / "services"
SERVICES = sorted(path.name for path in SERVICES_DIR.iterdir() if (path / "__init__.py").exists())


def _sources(service: str) -> Iterator[Path]:
    yield from sorted((SERVICES_DIR / service).rglob("*.py"))


def _leading_strings(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Every string constant, and the leading constant part of every f-string."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value
        elif isinstance(node, ast.JoinedStr) and node.values:
            first = node.values[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                yield node.lineno, first.value


def _foreign_prefixes(service: str) -> list[str]:
    others = [f"{name}/" for name in SERVICES if name != service]
    published = [prefix for prefix, owner in PUBLISHED_NAMESPACES.items() if owner != service]
    return [*others, *KERNEL_PREFIXES, *published]


def _violations(service: str) -> list[str]:
    prefixes = _foreign_prefixes(service)
    found: list[str] = []
    for path in _sources(service):
        tree = ast.parse(path.read_text(), filename=str(path))
        for line, text in _leading_strings(tree):
            if text.startswith("/"):  # an HTTP path, not a store key
                continue
            if any(text.startswith(prefix) for prefix in prefixes):
                found.append(f"{path.relative_to(REPO)}:{line}: names {text!r}")
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_no_service_names_another_services_store_prefix(service: str) -> None:
    assert _violations(service) == []


def test_the_rule_catches_a_foreign_prefix(tmp_path: Path) -> None:
    tree = ast.parse('KEY = f"deployer/endpoints/{name}.json"\nOK = "data/x"')
    names = [text for _, text in _leading_strings(tree)]
    assert any(text.startswith("deployer/") for text in names)
    assert "deployer/" in _foreign_prefixes("monitor")
    assert "monitor/" not in _foreign_prefixes("monitor")


def _plain_dict_reads(tree: ast.AST) -> Iterator[int]:
    """`json.loads(<x>.get_bytes(...))`: a stored document decoded without a model."""
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr != "loads" or not node.args:
            continue
        inner = node.args[0]
        if (
            isinstance(inner, ast.Call)
            and isinstance(inner.func, ast.Attribute)
            and inner.func.attr in {"get_bytes", "get_with_info"}
        ):
            yield node.lineno


@pytest.mark.parametrize("service", SERVICES)
def test_stored_documents_are_read_through_a_model(service: str) -> None:
    found = [
        f"{path.relative_to(REPO)}:{line}"
        for path in _sources(service)
        for line in _plain_dict_reads(ast.parse(path.read_text()))
    ]
    assert found == [], "decode stored JSON with its pydantic model (contract), not json.loads"


def test_every_state_contract_names_an_owner_and_its_owners_prefix() -> None:
    for spec in all_states():
        assert spec.owner in {*SERVICES, "*"}, spec.name
        if spec.owner != "*":
            assert spec.prefix.startswith((f"{spec.owner}/", *PUBLISHED_NAMESPACES)), spec.name


def test_services_never_import_each_other() -> None:
    for service in SERVICES:
        for path in _sources(service):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module:
                    parts = node.module.split(".")
                    if parts[0] == "services" and len(parts) > 1:
                        assert parts[1] == service, f"{path}: imports {node.module}"
