"""The client side never reaches open_clip: not in its dependencies, not in its imports."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_client_install_has_no_open_clip() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    client_side = project["dependencies"] + project["optional-dependencies"]["client"]
    assert not [dep for dep in client_side if "open_clip" in dep.lower() or "open-clip" in dep.lower()]
    assert any("open_clip" in dep for dep in project["optional-dependencies"]["server"])
    assert set(project["scripts"]) == {"blackvip", "blackvip-server"}


def test_importing_every_client_module_never_imports_open_clip_or_torch_in_shared() -> None:
    code = (
        "import sys, pkgutil, importlib, client, shared\n"
        "import shared.codec, shared.protocol\n"
        "assert 'torch' not in sys.modules, 'shared pulled torch'\n"
        "for m in pkgutil.iter_modules(client.__path__):\n"
        "    importlib.import_module('client.' + m.name)\n"
        "print('open_clip' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_the_command_line_parses_without_torch() -> None:
    code = "import sys, client.cli; client.cli.parse_args(['usage']); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"  # `blackvip usage` works on an SDK-only install
