"""The fuzz invariant (fuzz/fuzz_parse.py) run briefly inside the suite, without atheris."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
VECTORS = sorted((ROOT / "tests" / "vectors").glob("*/*.sip"))


def _load_target() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_parse", ROOT / "fuzz" / "fuzz_parse.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


target = _load_target()
SEEDS = [p.read_bytes() for p in VECTORS if p.stat().st_size < 4096]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_vectors_hold_the_invariant(path: Path) -> None:
    target.check(path.read_bytes())


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    target.check(data)


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_after_a_start_line(data: bytes) -> None:
    target.check(b"INVITE sip:a@b SIP/2.0\r\n" + data)
    target.check(b"SIP/2.0 200 OK\r\nVia: " + data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A vector with a few byte-level edits: flips, inserts of SIP-significant bytes, cuts."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        op = draw(st.integers(0, 3))
        if op == 0:
            data[pos] = draw(st.integers(0, 255))
        elif op == 1:
            data[pos:pos] = draw(
                st.sampled_from(
                    [
                        b"\r\n",
                        b"\n",
                        b" ",
                        b";",
                        b",",
                        b":",
                        b"<",
                        b'"',
                        b"\\",
                        b"[",
                        b"/",
                        b"\x00",
                        b"\xff",
                    ]
                )
            )
        elif op == 2:
            del data[pos : pos + draw(st.integers(1, 40))]
        else:
            chunk = data[pos : pos + draw(st.integers(1, 40))]
            data[pos:pos] = chunk
    return bytes(data)


@FUZZ
@given(mutated())
def test_mutated_vectors(data: bytes) -> None:
    target.check(data)


def test_atheris_harness(tmp_path: Path) -> None:
    """The atheris harness itself, for a few hundred runs (atheris is optional)."""
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for path in VECTORS[:10]:
        (corpus / path.name).write_bytes(path.read_bytes())
    proc = subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / "fuzz_parse.py"), "-runs=300", "-seed=1", str(corpus)],
        capture_output=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    assert b"Done 300 runs" in proc.stderr
