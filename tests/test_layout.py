"""The package's floors: no module imports a module above its own floor, and no import cycles.

Floors, bottom to top: base types and utils; networks, wrappers and the evaluator;
architectures (the Anakin loop, Sebulba); systems; benchmarks. Function-level imports count
the same as module-level ones. A system may import its template (ff_ddqn.py -> ff_dqn.py); a
Sebulba system gets its run loop from the architecture, never from another system (a Sebulba
variant may import its template beside it: rec_impala.py -> ff_impala.py).
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "stoix"
FLOORS = {
    "stoix.base_types": 0,
    "stoix.utils": 0,
    "stoix.networks": 1,
    "stoix.wrappers": 1,
    "stoix.evaluator": 1,
    "stoix.architectures": 2,
    "stoix.systems": 3,
    "stoix.benchmarks": 4,
    "stoix.plot": 4,  # reads logs only; imports no other stoix module
    "stoix.results": 5,  # runs system scripts as commands and tabulates them with stoix.plot
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def floor(module: str) -> int:
    if module == "stoix":
        return 0  # the empty package itself
    for prefix, level in FLOORS.items():
        if module == prefix or module.startswith(prefix + "."):
            return level
    raise AssertionError(f"{module} is on no floor: add its top-level package to FLOORS")


def stoix_imports(path: Path) -> set[str]:
    """The stoix modules `path` imports, anywhere in the file (`from a import b` counts as
    a.b when b is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("stoix"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("stoix"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return found


def test_every_module_is_on_a_floor():
    assert len(MODULES) > 30
    for module in MODULES:
        floor(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_from_a_higher_floor(module):
    for imported in stoix_imports(MODULES[module]):
        assert imported in MODULES, f"{module} imports {imported}, which does not exist"
        assert floor(imported) <= floor(module), (
            f"{module} (floor {floor(module)}) imports {imported} (floor {floor(imported)})"
        )
        if ".sebulba." in module and imported.startswith("stoix.systems."):
            # A Sebulba variant may import its template beside it (rec_impala.py -> ff_impala.py).
            template = imported.rsplit(".", 1)[0] == module.rsplit(".", 1)[0]
            assert ".anakin." in imported or template, (
                f"{module} takes Sebulba code from another system: {imported}"
            )


def test_no_import_cycles():
    graph = {m: stoix_imports(p) - {m} for m, p in MODULES.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for nxt in sorted(graph.get(module, ())):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :] + [nxt] if nxt in path else [module, nxt]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_the_checker_sees_an_upward_import(tmp_path):
    # The walk must catch a function-level import too, not only module-level ones.
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from stoix.architectures.anakin import run_experiment\n")
    assert stoix_imports(source) == {"stoix.architectures.anakin"}
    assert floor("stoix.architectures.anakin") > floor("stoix.utils.sizes")
