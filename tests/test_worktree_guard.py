"""The work-tree guard (tests/worktree_guard.py) on a throwaway git repository: a run whose test leaves
a file the ignore rules do not cover fails and names it; an ignored file or a clean run passes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_pytest(repo: Path, body: str) -> subprocess.CompletedProcess[str]:
    (repo / "test_it.py").write_text(f"from pathlib import Path\n\n\ndef test_it():\n    {body}\n")
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "t"], cwd=repo, check=True
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "tests.worktree_guard",
            "-p",
            "no:cacheprovider",
            "test_it.py",
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        env=env,
    )


def test_a_run_that_leaves_a_stray_file_fails_and_names_it(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("/runs/\n__pycache__/\n")
    stray = run_pytest(
        tmp_path, "Path('postgresql:').mkdir(exist_ok=True); Path('postgresql:/db').write_text('x')"
    )
    assert stray.returncode == 1, stray.stdout
    assert "?? postgresql:/db" in stray.stdout
    ignored = run_pytest(tmp_path, "Path('runs').mkdir(exist_ok=True); Path('runs/r').write_text('x')")
    assert ignored.returncode == 0, ignored.stdout
    clean = run_pytest(tmp_path, "assert True")
    assert clean.returncode == 0, clean.stdout
