"""The package's layers: imports run one way, with no circles, and the learner never imports Flower."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("fedrl", "strategies")
ENTRY_POINTS = ("server_app", "client_app")
# Who may import whom: a module of the key's layer may import only from these layers.
# fedrl.config checks env ids with fedrl.rl.envs, a leaf that imports nothing of ours.
ALLOWED = {
    "fedrl.config": {"fedrl.rl.envs"},
    "fedrl.runtime": set(),
    "fedrl.rl": {"fedrl.config", "fedrl.runtime"},
    "fedrl.federation": {"fedrl.config", "fedrl.runtime", "fedrl.rl", "fedrl.transport"},
    "fedrl.transport": {"fedrl.config"},
    "strategies": {"fedrl.config", "fedrl.rl", "fedrl.federation"},
    "fedrl.tools": {"fedrl.config", "fedrl.runtime", "fedrl.rl", "fedrl.federation", "fedrl.transport"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    found = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    found.update({name: ROOT / f"{name}.py" for name in ENTRY_POINTS})
    return found


def imports(path: Path, name: str, known: set[str]) -> tuple[set[str], set[str]]:
    """The project modules ``path`` imports (each import also reaches every package above it), and the rest."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets.add(base)
            targets |= {f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known}
    ours, theirs = set(), set()
    for target in targets:
        parts = target.split(".")
        chain = {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & known
        (ours if chain else theirs).add(target)
        ours |= chain
    return ours - {name}, theirs


def graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    mods = modules()
    edges, external = {}, {}
    for name, path in mods.items():
        edges[name], external[name] = imports(path, name, set(mods))
    return edges, external


def layer(name: str) -> str:
    return max((key for key in ALLOWED if name == key or name.startswith(key + ".")), key=len, default=name)


def test_the_import_graph_has_no_circle():
    edges, _ = graph()
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_layers_import_only_the_layers_below_them():
    edges, _ = graph()
    wrong = []
    for name, targets in edges.items():
        if name in ENTRY_POINTS or name in ("fedrl", "fedrl.evaluate", "fedrl.single", "fedrl.deploy"):
            continue
        for target in targets:
            if target in PACKAGES or layer(target) == layer(name):
                continue
            allowed = ALLOWED[layer(name)]
            above_allowed = any(a.startswith(target + ".") for a in allowed)  # the package of an allowed module
            if target not in allowed and layer(target) not in allowed and not above_allowed:
                wrong.append(f"{name} imports {target}")
    assert not wrong, wrong
    assert edges["fedrl.rl.envs"] <= {"fedrl", "fedrl.rl"}


def test_the_learner_never_imports_flower_not_even_through_another_module():
    edges, external = graph()
    for name in edges:
        if layer(name) != "fedrl.rl":
            continue
        seen, todo = set(), [name]
        while todo:
            mod = todo.pop()
            if mod in seen:
                continue
            seen.add(mod)
            flower = [t for t in external[mod] if t == "flwr" or t.startswith("flwr.")]
            assert not flower, f"{name} reaches {mod}, which imports {flower}"
            todo += edges[mod]


def test_the_scheduler_is_handed_its_aggregator_and_never_imports_strategies():
    edges, _ = graph()
    for name in edges:
        if name.startswith("fedrl.") and name != "fedrl":
            assert not any(t == "strategies" or t.startswith("strategies.") for t in edges[name]), name


def test_the_checker_sees_a_circle_and_a_learner_that_imports_flower(tmp_path):
    for pkg, files in {"fedrl": {"__init__.py": "", "config.py": "from fedrl.rl import ppo\n"},
                       "fedrl/rl": {"__init__.py": "", "ppo.py": "import flwr\nfrom fedrl import config\n"}}.items():
        (tmp_path / pkg).mkdir(parents=True)
        for file, text in files.items():
            (tmp_path / pkg / file).write_text(text)
    (tmp_path / "strategies").mkdir()
    for entry in ENTRY_POINTS:
        (tmp_path / f"{entry}.py").write_text("")
    globals()["ROOT"] = tmp_path
    try:
        with pytest.raises(AssertionError, match="fedrl.config -> fedrl.rl.ppo -> fedrl.config"):
            test_the_import_graph_has_no_circle()
        with pytest.raises(AssertionError, match=re.escape("imports ['flwr']")):
            test_the_learner_never_imports_flower_not_even_through_another_module()
    finally:
        globals()["ROOT"] = Path(__file__).resolve().parents[2]
