"""The build under test is the one CI meant: scripts/test sets SIPWAKE_EXPECT_BUILD, so a
compile that silently fell back to pure Python (or a stray compiled module in the pure,
editable tree) fails here rather than passing slower, or on stale code."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sipwake import buildinfo


def test_version_names_the_build() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sipwake", "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("sipwake ") and buildinfo.describe() in out
    kind = buildinfo.build()
    assert ("pure Python" in out) == (kind == "pure")
    names = ", ".join((*buildinfo.COMPILED_PACKAGES, *buildinfo.COMPILED_MODULES))
    assert (f"compiled (mypyc: {names})" in out) == (kind == "compiled")


@pytest.mark.skipif("SIPWAKE_EXPECT_BUILD" not in os.environ, reason="CI states the build")
def test_build_is_the_expected_one() -> None:
    assert buildinfo.build() == os.environ["SIPWAKE_EXPECT_BUILD"], buildinfo.describe()


def test_compiled_modules_really_are_extensions() -> None:
    """Cross-check buildinfo against what the import system loaded."""
    import sipwake.policy.registrar
    import sipwake.sip.codec
    import sipwake.storage.sqlite

    for mod in (sipwake.sip.codec, sipwake.policy.registrar):
        compiled = not (mod.__file__ or "").endswith(".py")
        package = mod.__name__.split(".")[1]
        assert compiled == (buildinfo.package_build(package) == "compiled"), mod.__file__
    mod = sipwake.storage.sqlite
    compiled = not (mod.__file__ or "").endswith(".py")
    assert compiled == (buildinfo.module_build("storage/sqlite") == "compiled"), mod.__file__


def test_setup_compiles_the_packages_buildinfo_reports() -> None:
    tree = ast.parse((Path(__file__).parents[1] / "setup.py").read_text())
    compiled = next(
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "COMPILED" for t in node.targets)
    )
    paths = ast.literal_eval(compiled)
    names = tuple(p.removeprefix("src/sipwake/").removesuffix(".py") for p in paths)
    assert names == (*buildinfo.COMPILED_PACKAGES, *buildinfo.COMPILED_MODULES)
