"""The tests depend on the package only: nothing under tests/ imports from bench/, whose scripts may
change with each benchmark; what both need lives in tritonfleet/."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def imported_modules(source: str) -> list[str]:
    modules = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.append(node.module)
    return modules


def imports_bench(source: str) -> bool:
    return any(name == "bench" or name.startswith("bench.") for name in imported_modules(source))


def test_the_check_sees_every_form_of_importing_bench():
    assert imports_bench("from bench.gateway.proxies import start_envoy")
    assert imports_bench("import bench.gateway.run")
    assert imports_bench("def f():\n    from bench import gateway")
    assert not imports_bench("from benchmarks import x\nimport tritonfleet.proxies\nfrom . import bench")


def test_no_test_file_imports_bench():
    offenders = [str(path.relative_to(TESTS)) for path in sorted(TESTS.rglob("*.py"))
                 if imports_bench(path.read_text())]
    assert offenders == []
