"""What the compiled extension exports and what it carries (issue 16).

A gcc 13.3 build died of SIGSEGV formatting an integer into a TORCH_CHECK
message, inside std::basic_ostream::_M_insert<long> code that gdb placed in
_C.so itself (nearest symbol std::codecvt<char16_t, ...>::do_unshift, library
code of libstdc++). setup.py therefore builds _C.so with hidden visibility and
a version script: it must export its module init only (nothing for the
dynamic linker to bind another library's copy to, or the reverse), hold no
libstdc++ library code (which could only come from a static libstdc++), and
take libstdc++ as a shared library. These read the binary with binutils (nm,
readelf), which every toolchain that builds it has.
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess

import pytest

import sparse_kernels  # noqa: F401  (loads the extension)

SO = importlib.import_module("sparse_kernels._C").__file__
# Functions of libstdc++.so that no header instantiates in a user's object:
# found inside _C.so, they were linked in from a static libstdc++.
LIBSTDCXX_LIBRARY_CODE = re.compile(
    r"std::codecvt<char16_t|std::locale::_Impl|std::ios_base::Init::Init|std::__num_base::_S_format_float|"
    r"std::(ostream|basic_ostream<char, std::char_traits<char> >)::_M_insert<")


def _binutils(*command) -> str:
    if shutil.which(command[0]) is None:
        pytest.fail(f"{command[0]} (binutils) is needed to read the extension's symbols; install binutils")
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def test_the_extension_exports_its_module_init_only():
    defined = [line.split()[-1] for line in _binutils("nm", "-D", "--defined-only", SO).splitlines()
               if line.strip()]
    assert defined == ["PyInit__C"], f"{len(defined)} exported symbols, e.g. {defined[:20]}"


def test_no_libstdcxx_library_code_is_linked_into_the_extension():
    symbols = _binutils("nm", "-C", SO)  # the full symbol table: local symbols too
    assert "PyInit__C" in symbols, "the symbol table was stripped: nothing to check"
    inside = [line for line in symbols.splitlines()
              if line[17:18] in "TtWwVvIiu" and LIBSTDCXX_LIBRARY_CODE.search(line[19:])]
    assert not inside, "libstdc++ library code inside _C.so (a static libstdc++?):\n" + "\n".join(inside[:20])


def test_libstdcxx_is_a_shared_dependency():
    needed = re.findall(r"\(NEEDED\).*\[(.*)\]", _binutils("readelf", "-d", SO))
    assert "libstdc++.so.6" in needed, needed
