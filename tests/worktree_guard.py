"""A pytest plugin (tests/conftest.py loads it): the run fails if it left anything in the work tree that
the ignore rules do not cover, a new file or a changed tracked one (``git status``, before against
after). A test writing beside the code (a ledger opened at a URL made a path once left folders named
``postgresql:`` at the root, and they were committed) is then caught on the run that does it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

_BEFORE = pytest.StashKey[frozenset[str]]()


def work_tree_changes(root: Path) -> frozenset[str] | None:
    """``git status`` entries (``?? path``, `` M path``...) of the work tree at ``root``; None outside
    a git work tree."""
    done = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all", "-z"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        return None
    return frozenset(entry for entry in done.stdout.split("\0") if entry)


def pytest_sessionstart(session: pytest.Session) -> None:
    before = work_tree_changes(session.config.rootpath)
    if before is not None:
        session.config.stash[_BEFORE] = before


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = session.config.stash.get(_BEFORE, None)
    after = work_tree_changes(session.config.rootpath)
    if before is None or after is None:
        return
    left = sorted(after - before)
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = "the test run left files the ignore rules do not cover:\n" + "\n".join(left)
        if reporter is not None:
            reporter.write_sep("=", "work tree changed", red=True)
            reporter.write_line(message)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
