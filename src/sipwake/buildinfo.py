"""Which build of sipwake is running: pure Python, or with the core compiled by mypyc.

setup.py compiles the packages in COMPILED_PACKAGES when it can (issue 16); an extension
module next to a .py is what Python imports, so a package counts as compiled when every one
of its modules has one.
"""

from __future__ import annotations

from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

COMPILED_PACKAGES = ("sip", "policy", "app")  # under sipwake/; setup.py's COMPILED
# Modules compiled on their own (under sipwake/, without ".py"), also in setup.py's
# COMPILED: the embedded store's path of every REGISTER (the row's encoding, the packed
# bindings, the group commit), 5 % of a REGISTER's instructions (bench/README.md). The rest
# of storage/ waits on the network (Redis) or runs once (start-up), so it stays pure.
COMPILED_MODULES = ("storage/codec", "storage/packed", "storage/sqlite")


def _has_extension(stem: Path) -> bool:
    """Is there an extension module for the module at ``stem`` (its path without .py)?"""
    return any(stem.with_name(stem.name + suffix).exists() for suffix in EXTENSION_SUFFIXES)


def package_build(package: str) -> str:
    """``compiled``, ``pure`` or ``partly compiled`` for one package under sipwake/."""
    root = Path(__file__).parent / package
    compiled = pure = 0
    for source in root.rglob("*.py"):
        if _has_extension(source.with_suffix("")):
            compiled += 1
        else:
            pure += 1
    if compiled and pure:
        return "partly compiled"
    return "compiled" if compiled else "pure"


def module_build(module: str) -> str:
    """``compiled`` or ``pure`` for one module, e.g. ``storage/sqlite``."""
    return "compiled" if _has_extension(Path(__file__).parent / module) else "pure"


def _kinds() -> dict[str, str]:
    kinds = {p: package_build(p) for p in COMPILED_PACKAGES}
    kinds.update((m, module_build(m)) for m in COMPILED_MODULES)
    return kinds


def build() -> str:
    """``compiled`` (every package in COMPILED_PACKAGES and every module in
    COMPILED_MODULES), ``pure``, or ``mixed``."""
    kinds = set(_kinds().values())
    if kinds == {"compiled"}:
        return "compiled"
    return "pure" if kinds == {"pure"} else "mixed"


def describe() -> str:
    """One line for ``sipwake --version``, e.g. ``compiled (mypyc: sip, policy, app,
    storage/codec, ...)``."""
    kind = build()
    if kind == "pure":
        return "pure Python"
    if kind == "compiled":
        return f"compiled (mypyc: {', '.join((*COMPILED_PACKAGES, *COMPILED_MODULES))})"
    parts = [f"{name} {k}" for name, k in _kinds().items()]
    return f"partly compiled (mypyc: {', '.join(parts)})"
