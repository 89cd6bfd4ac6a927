"""Who may do what: the plugin alone talks to pytest about a test's fate, the gate is
pure, and one module holds the kernels every test, example and benchmark uses."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pytest_tlautotune"


def calls(path: Path) -> set[str]:
    """``module.function`` of every call in ``path`` written that way (``pytest.fail(...)``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and isinstance(node.func.value, ast.Name):
            found.add(f"{node.func.value.id}.{node.func.attr}")
    return found


def test_only_the_plugin_fails_skips_or_warns():
    fate = {"pytest.fail", "pytest.skip", "pytest.xfail", "pytest.exit", "warnings.warn", "item.warn"}
    offenders = {str(p.relative_to(ROOT)): sorted(calls(p) & fate) for p in PACKAGE.rglob("*.py")
                 if p.name != "plugin.py" or p.parent != PACKAGE}
    assert {k: v for k, v in offenders.items() if v} == {}
    assert {"pytest.fail", "pytest.skip", "warnings.warn"} <= calls(PACKAGE / "plugin.py")


def test_the_gate_is_pure():
    tree = ast.parse((PACKAGE / "gate.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"pytest", "os", "pathlib", "shutil", "io"}
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    attrs = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert "open" not in names and not attrs & {"read_text", "write_text", "read_bytes", "write_bytes"}


def test_one_copy_of_the_kernels():
    # Every @T.prim_func of a GEMM or an add lives in examples/kernels_*.py; the others are kernels
    # whose own source is what their test is about: TileLang's decorator styles and where they are
    # defined (compat, shipping, the decorator-style example, TileOPs-shaped classes in intercept),
    # lowering errors (programs), edits to a kernel's file (core, trust, checked hits), kernels
    # that write their inputs (inplace) and builds that take a while or write nothing (bounds).
    own = {"examples/kernels_cpu.py", "examples/kernels_cuda.py", "tests/test_compat.py", "tests/test_programs.py",
           "tests/test_core.py", "tests/test_trust.py", "tests/test_checked_hits.py", "tests/test_inplace.py",
           "tests/test_intercept.py", "tests/test_shipping.py", "examples/test_cpu_tilelang_style.py",
           "tests/test_bounds.py"}
    users = {str(p.relative_to(ROOT)) for d in ("tests", "examples", "benchmarks") for p in (ROOT / d).rglob("*.py")
             if "@T.prim_func" in p.read_text() and p != Path(__file__).resolve()}
    assert users - own == set()
