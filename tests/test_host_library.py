"""The host half of a tvm_ffi kernel's library (``store.artifacts.create_shared``): TVM writes it as
C and its compiler (g++ unless CXX/CC say otherwise) compiles it as C++; the plugin has the same
compiler compile it as C, where that works. Real compilers, real libraries loaded with ctypes;
runs without a GPU or NVRTC."""

import ctypes
import shutil
import stat

import pytest

pytest.importorskip("tilelang")
from pytest_tlautotune.store.artifacts import create_shared  # noqa: E402

pytestmark = pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("g++")), reason="needs gcc and g++")

#: Compiles only as C (the C++ compiler refuses it), as TVM's host code would if it were C-only.
ONLY_AS_C = """
#ifdef __cplusplus
#error "compiled as C++"
#endif
int answer(void) { return 42; }
"""
#: Compiles only as C++: the C compile fails and TVM's default compiler takes over.
ONLY_AS_CXX = """
extern "C" int answer(void) { return static_cast<int>(42.0); }
"""


def _answer(library) -> int:
    return ctypes.CDLL(str(library)).answer()


@pytest.fixture
def no_user_compiler(monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.delenv("CC", raising=False)


def test_host_code_is_compiled_as_c(tmp_path, no_user_compiler):
    (tmp_path / "lib0.c").write_text(ONLY_AS_C)
    create_shared(str(tmp_path / "k.so"), [str(tmp_path / "lib0.c")])
    assert _answer(tmp_path / "k.so") == 42


def test_host_code_only_cxx_accepts_falls_back_to_tvms_compiler(tmp_path, no_user_compiler):
    (tmp_path / "lib0.c").write_text(ONLY_AS_CXX)
    create_shared(str(tmp_path / "k.so"), [str(tmp_path / "lib0.c")])
    assert _answer(tmp_path / "k.so") == 42


@pytest.mark.parametrize("variable", ["CXX", "CC"])
def test_the_users_compiler_compiles_it_as_c(tmp_path, monkeypatch, variable):
    """``CXX``/``CC`` name TVM's compiler (a C++ one, as on hosts with ``CXX=/opt/gcc/bin/g++``):
    the plugin compiles with it, as TVM would, and as C."""
    log = tmp_path / "calls.txt"
    wrapper = tmp_path / "my-compiler"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec {shutil.which("g++")} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv(variable, str(wrapper))
    (tmp_path / "lib0.c").write_text(ONLY_AS_C)
    create_shared(str(tmp_path / "k.so"), [str(tmp_path / "lib0.c")])
    assert _answer(tmp_path / "k.so") == 42
    assert log.read_text().count("lib0.c") == 1  # one compile, through the user's compiler
