"""The docs site mentions every command-line flag and every HTTP route, and the README stays a front door.

The generated reference pages list every flag and route by construction, so they prove nothing: these
checks read the hand-written pages in ``docs/`` only. A flag or route added without a word in them fails here.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _gen_reference() -> ModuleType:
    # docs/ is no package: load the site's generator by path, as mkdocs-gen-files does (main() is not run).
    spec = importlib.util.spec_from_file_location("gen_reference", DOCS / "gen_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    return _gen_reference()


@pytest.fixture(scope="module")
def pages() -> str:
    return "\n".join(path.read_text() for path in sorted(DOCS.rglob("*.md")))


def undocumented_flags(parser: argparse.ArgumentParser, gen: ModuleType, text: str) -> list[str]:
    # Only a whole flag counts: --quota matches neither --quota-images nor --quota-cost.
    return [flag for flag in gen.flags(parser) if not re.search(re.escape(flag) + r"(?![\w-])", text)]


def undocumented_routes(routes: list[str], text: str) -> list[str]:
    missing = []
    for route in routes:
        # A path parameter may be written under any name: /v1/tasks/{id}/loss documents {task_id}.
        pattern = re.sub(r"\\\{\w+\\\}", r"\\{\\w+\\}", re.escape(route))
        if not re.search(pattern + r"(?![\w-]|/\w|/\{)", text):
            missing.append(route)
    return missing


def test_every_flag_is_documented(gen: ModuleType, pages: str) -> None:
    commands = list(gen.parsers())
    assert {"blackvip train", "blackvip-server", "blackvip-server keys create"} <= {c for c, _ in commands}
    # A list, not a dict: blackvip-server is two parsers (the server's flags and the admin commands).
    missing = [(command, undocumented_flags(parser, gen, pages)) for command, parser in commands]
    assert [(command, flags) for command, flags in missing if flags] == []


def test_every_route_is_documented(gen: ModuleType, pages: str) -> None:
    routes = gen.route_paths()
    assert "/v1/tasks/{task_id}/loss" in routes and "/docs" in routes
    assert undocumented_routes(routes, pages) == []


def test_the_checks_catch_what_the_docs_leave_out(gen: ModuleType, pages: str) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quota")  # a prefix of documented flags, never documented itself
    parser.add_argument("--no-such-flag-anywhere")
    assert undocumented_flags(parser, gen, pages) == ["--quota", "--no-such-flag-anywhere"]
    assert undocumented_routes(["/v1/tasks/{task_id}/embeddings", "/v1"], pages) == [
        "/v1/tasks/{task_id}/embeddings",
        "/v1",
    ]


def test_the_readme_is_a_front_door() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 10_240
    commands = [line.strip() for line in readme.splitlines()[:16] if line.startswith("    ")]
    assert commands == [
        "python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.14.1 torchvision==0.29.1 "
        '&& pip install -e ".[dev]" && blackvip demo',
        ". .venv/bin/activate && bash scripts/test.sh",
    ]
    for page in re.findall(r"\(docs/([\w/-]+\.md)", readme):
        assert (DOCS / page).is_file(), page


def test_no_page_cites_a_file_outside_the_repository(pages: str) -> None:
    assert "../shared/" not in pages and "DESIGN.md" not in pages
