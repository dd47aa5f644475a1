"""Which build of sipwake is running: pure Python, or with the core compiled by mypyc.

setup.py compiles the packages in COMPILED_PACKAGES when it can (issue 16); an extension
module next to a .py is what Python imports, so a package counts as compiled when every one
of its modules has one.
"""

from __future__ import annotations

from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

COMPILED_PACKAGES = ("sip", "policy", "app")  # under sipwake/; setup.py's COMPILED


def package_build(package: str) -> str:
    """``compiled``, ``pure`` or ``partly compiled`` for one package under sipwake/."""
    root = Path(__file__).parent / package
    compiled = pure = 0
    for source in root.rglob("*.py"):
        stem = source.with_suffix("")
        if any(stem.with_name(stem.name + suffix).exists() for suffix in EXTENSION_SUFFIXES):
            compiled += 1
        else:
            pure += 1
    if compiled and pure:
        return "partly compiled"
    return "compiled" if compiled else "pure"


def build() -> str:
    """``compiled`` (every package in COMPILED_PACKAGES), ``pure``, or ``mixed``."""
    kinds = {package_build(p) for p in COMPILED_PACKAGES}
    if kinds == {"compiled"}:
        return "compiled"
    return "pure" if kinds == {"pure"} else "mixed"


def describe() -> str:
    """One line for ``sipwake --version``, e.g. ``compiled (mypyc: sip, policy, app)``."""
    kind = build()
    if kind == "pure":
        return "pure Python"
    if kind == "compiled":
        return f"compiled (mypyc: {', '.join(COMPILED_PACKAGES)})"
    parts = [f"{p} {package_build(p)}" for p in COMPILED_PACKAGES]
    return f"partly compiled (mypyc: {', '.join(parts)})"
