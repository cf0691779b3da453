"""docs/architecture.md is the contract: its routes table and stack.json keys match the code,
and the README and docs link only to files inside the repository."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ddmail_stack.layout import StackLayout
from ddmail_web.app import create_app

REPO = Path(__file__).resolve().parents[2]
CONTRACT = REPO / "docs" / "architecture.md"


def _section(title: str) -> str:
    text = CONTRACT.read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def _documented_routes() -> set[tuple[str, str]]:
    """(method, path) pairs of the panel routes table."""
    routes = set()
    for line in _section("10. Panel routes").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[1].startswith("`/"):
            continue
        for path in re.findall(r"`(/[^`]*)`", cells[1]):
            for method in cells[0].split("/"):
                routes.add((method, path))
    return routes


def _app_routes() -> set[tuple[str, str]]:
    app = create_app()
    return {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }


def test_every_panel_route_is_in_the_contract_and_the_contract_names_no_missing_route() -> None:
    documented, served = _documented_routes(), _app_routes()
    assert served - documented == set(), "routes served but not in docs/architecture.md"
    assert documented - served == set(), "routes in docs/architecture.md that the panel lacks"


def test_stack_json_keys_are_the_documented_ones() -> None:
    block = re.search(r"```json\n(.*?)```", _section("8. The local stack"), re.DOTALL)
    assert block is not None
    documented = set(json.loads(block.group(1)))
    written = set(StackLayout(root=Path("/tmp/x")).stack_json())
    assert documented == written


def test_readme_and_docs_link_only_to_files_in_the_repository() -> None:
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)", doc.read_text()):
            assert "://" not in target or target.startswith("https://"), (doc, target)
            if "://" in target:
                continue
            resolved = (doc.parent / target).resolve()
            assert resolved.is_relative_to(REPO), f"{doc.name} links outside the repo: {target}"
            assert resolved.exists(), f"{doc.name} links to a missing file: {target}"
