"""A missing program or library is found before it is used and skips what needs it, with the reason."""

from __future__ import annotations

import pytest

from tritonfleet.prerequisites import ProgramNotInstalled, program, unresolved_libraries

# `ldd` on the 3.12 stub of a machine without libpython3.12, as Debian's ldd prints it.
LDD_WITHOUT_LIBPYTHON = """\
\tlinux-vdso.so.1 (0x00007ffd5a9f6000)
\tlibcudart-09529672.so.12.6.77 => /venv/nvidia_pytriton.libs/libcudart-09529672.so.12.6.77 (0x00007f32e0000000)
\tlibpython3.12.so.1.0 => not found
\tlibstdc++.so.6 => /lib/x86_64-linux-gnu/libstdc++.so.6 (0x00007f32dfc00000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f32dfe1e000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f32e05dc000)
"""


def test_ldd_output_names_the_libraries_it_could_not_find():
    assert unresolved_libraries(LDD_WITHOUT_LIBPYTHON) == ["libpython3.12.so.1.0"]
    assert unresolved_libraries(LDD_WITHOUT_LIBPYTHON.replace(" => not found", " => /usr/lib/libpython3.12.so.1.0")) == []


def test_a_program_found_on_path_or_in_its_usual_place(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    usual = tmp_path / "sbin-haproxy"
    usual.write_text("")
    assert program("haproxy", "apt-get install haproxy", (str(usual),)) == usual
    with pytest.raises(ProgramNotInstalled, match=r"haproxy is not installed \(apt-get install haproxy\)"):
        program("haproxy", "apt-get install haproxy", (str(tmp_path / "nowhere"),))


def test_a_missing_prerequisite_skips_the_test_with_its_reason(pytester):
    # The suite's own hooks (tests/conftest.py), in a run of their own: one test misses a program in
    # its body, one in its fixture, and one fails for another reason, which must stay a failure.
    pytester.makeconftest("from tests.conftest import pytest_runtest_call, pytest_runtest_setup  # noqa: F401")
    pytester.makepyfile("""
        import pytest
        from tritonfleet.prerequisites import program
        from tritonfleet.triton_install import TritonNotInstalled

        @pytest.fixture
        def triton():
            raise TritonNotInstalled("the stub needs libpython3.12.so.1.0")

        def test_body():
            program("no-such-program-here", "apt-get install it", ())

        def test_fixture(triton):
            pass

        def test_other_error():
            raise FileNotFoundError("a real bug")
    """)
    result = pytester.runpytest("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=2, failed=1)
    result.stdout.fnmatch_lines([
        "*missing prerequisite: no-such-program-here is not installed (apt-get install it)*",
        "*missing prerequisite: the stub needs libpython3.12.so.1.0*",
    ])
