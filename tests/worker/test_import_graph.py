"""The worker's modules import each other without a cycle, and the bare Celery app pulls in no worker code."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "worker"
# Imported lazily inside functions on purpose (the parent never loads them); not gpuq modules anyway.
HEAVY = {"torch", "transformers", "diffusers", "peft", "datasets", "accelerate", "evaluate"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in WORKER.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = "gpuq." + ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imported(name: str, path: Path) -> set[str]:
    """Every module ``path`` imports, at module level or inside a function, as dotted names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] not in HEAVY)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] in HEAVY:
                continue
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # ``from pkg import module``
    return found


def import_graph() -> dict[str, set[str]]:
    """gpuq.worker module -> the gpuq.worker modules it imports."""
    modules = _modules()
    return {name: {m for m in _imported(name, path) if m in modules and m != name}
            for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), or a module importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_worker_import_graph_is_acyclic() -> None:
    graph = import_graph()
    assert "gpuq.worker.outcome" in graph and graph["gpuq.worker.main"]
    assert cycles(graph) == []


def test_the_cycle_finder_sees_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_celery_app_alone_loads_no_task_handler_or_runner_module() -> None:
    code = ("import json, sys; import gpuq.worker.celery_app; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('gpuq.worker'))))")
    env = {**os.environ, "GPUQ_REDIS_URL": os.environ.get("GPUQ_REDIS_URL") or "redis://127.0.0.1:1/0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    loaded = json.loads(out.strip().splitlines()[-1])
    assert "gpuq.worker.celery_app" in loaded
    worker_code = ("tasks", "handlers", "runner", "groups", "outcome", "signals", "main")
    assert [m for m in loaded if m.split(".")[2:3] and m.split(".")[2] in worker_code] == []
