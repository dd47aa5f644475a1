"""Build hook: compile sipwake's sans-I/O core with mypyc (issue 16); metadata is in pyproject.

``pip install .`` compiles the packages and modules in COMPILED to C extension modules when
a C compiler and the Python headers are present, and installs them pure Python otherwise.
The .py files are installed too; where both exist, Python imports the extension.

* ``SIPWAKE_PURE=1`` builds pure Python.
* ``SIPWAKE_REQUIRE_COMPILED=1`` makes the fall-back an error (CI: a broken compile must be
  loud, not a silently slower pure build).
* Editable installs (``pip install -e .``, what scripts/setup makes for development) and
  ``build_ext --inplace`` are always pure: a compiled module next to its .py in src/ would
  be imported instead of the .py, so later edits of the source would silently not run.

mypyc's own errors name the file and line (``src/sipwake/sip/codec.py:12: error: ...``).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Any

from setuptools import setup

ROOT = Path(__file__).resolve().parent
# Packages, then single modules: buildinfo.COMPILED_PACKAGES and COMPILED_MODULES.
COMPILED = (
    "src/sipwake/sip",
    "src/sipwake/policy",
    "src/sipwake/app",
    "src/sipwake/storage/codec.py",
    "src/sipwake/storage/packed.py",
    "src/sipwake/storage/sqlite.py",
)
# Commands that build extension modules; the metadata-only ones (egg_info, dist_info,
# sdist) must not pay for a compile.
# `mypy src` (scripts/test) is the strict type check. The build environment pip makes
# holds only [build-system] requires, not the runtime dependencies the adapters import
# (redis, websockets, h2, ...): types from them are Any here, and the modules that are not
# compiled are read for their types without reporting their errors.
MYPY_BUILD_FLAGS = (
    "--follow-imports=silent",
    "--ignore-missing-imports",
    "--no-warn-unused-ignores",
    "--no-warn-return-any",
)
BUILDING = {"build", "build_ext", "bdist_wheel", "install", "develop", "editable_wheel"}


def _say(text: str) -> None:
    print(f"sipwake build: {text}", file=sys.stderr, flush=True)


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "no", "false")


def _why_pure() -> str | None:
    """Why this build must be pure Python, or None when it can be compiled."""
    if _flag("SIPWAKE_PURE"):
        return "SIPWAKE_PURE is set"
    if "editable_wheel" in sys.argv or "develop" in sys.argv or "--inplace" in sys.argv:
        return "editable/in-place build (compiled modules in src/ would shadow edits)"
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    compiler = shlex.split(cc)[0] if cc.strip() else "cc"
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler!r} not found)"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        return "no Python headers (Python.h; Debian: python3-dev)"
    try:
        import mypyc.build  # noqa: F401
    except ImportError:
        return "mypyc is not installed in the build environment"
    return None


def _ext_modules() -> list[Any]:
    if not BUILDING.intersection(sys.argv[1:]):
        return []
    why = _why_pure()
    if why is not None:
        if _flag("SIPWAKE_REQUIRE_COMPILED"):
            _say(f"cannot compile: {why}; SIPWAKE_REQUIRE_COMPILED is set")
            raise SystemExit(1)
        _say(f"pure Python build: {why}")
        return []
    from mypyc.build import mypycify

    _say(f"compiling {', '.join(p.removeprefix('src/') for p in COMPILED)} with mypyc")
    # Paths relative to this file: mypyc names each module from them (sipwake.sip.codec).
    os.chdir(ROOT)
    try:
        return mypycify(
            [*COMPILED, "--config-file", "pyproject.toml", *MYPY_BUILD_FLAGS],
            opt_level=os.environ.get("MYPYC_OPT_LEVEL", "3"),
            # One C file per module rather than one for all: build_ext compiles them in
            # parallel (see options below), and an edit recompiles less.
            multi_file=True,
        )
    except SystemExit as exc:
        # mypyc printed the errors above, each naming file and line.
        _say(
            "mypyc could not compile the modules named above. Fix them (the code must "
            "type-check and stay within what mypyc supports), or build pure Python with "
            "SIPWAKE_PURE=1."
        )
        raise SystemExit(1) from exc


setup(
    ext_modules=_ext_modules(),
    options={"build_ext": {"parallel": os.cpu_count() or 1}},
)
