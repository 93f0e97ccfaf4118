"""Every module says what it exports, and exports only what exists (as httpx checks its ``__all__``)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import client
import digits
import recipes
import server
import shared

PACKAGES = (shared, digits, server, client, recipes)


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        names.append(package.__name__)
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not info.name.endswith("__main__"):  # runs the program when imported
                names.append(info.name)
    return names


@pytest.mark.parametrize("name", _modules())
def test_every_module_declares_all_and_each_name_exists(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    missing = [item for item in exported if not hasattr(module, item)]
    assert not missing, f"{name}.__all__ lists names it does not define: {missing}"
    assert len(set(exported)) == len(exported), f"{name}.__all__ repeats a name"


def test_the_sdk_exports_every_exception_of_its_tree() -> None:
    from client import _exceptions

    tree = {
        name
        for name, value in vars(_exceptions).items()
        if isinstance(value, type)
        and issubclass(value, Exception)
        and value.__module__ == _exceptions.__name__
    }
    assert tree <= set(client.__all__), f"not exported by client: {sorted(tree - set(client.__all__))}"
    for name in client.__all__:
        assert getattr(client, name).__module__.startswith("client."), name
