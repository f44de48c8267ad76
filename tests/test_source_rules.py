"""Rules of the source that a reviewer would otherwise have to remember: settings come from one object."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("api", "worker", "common", "client")
SETTINGS = ROOT / "common" / "settings.py"


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _is_write(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """``os.environ[name] = value`` (or ``del``): handing a value to processes started later, not a read."""
    parent = parents.get(node)
    return isinstance(parent, ast.Subscript) and isinstance(parent.ctx, (ast.Store, ast.Del))


def environment_reads(path: Path) -> list[str]:
    """Every read of the process environment in ``path``, as ``path:line: code``."""
    tree = ast.parse(path.read_text(), str(path))
    parents = _parents(tree)
    found = []
    for node in ast.walk(tree):
        bad = False
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb", "getenvb"):
            bad = isinstance(node.value, ast.Name) and node.value.id == "os" and not _is_write(node, parents)
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            bad = any(a.name in ("environ", "getenv", "environb", "getenvb") for a in node.names)
        if bad:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_settings_are_the_only_reader_of_the_environment() -> None:
    files = [p for top in CHECKED for p in sorted((ROOT / top).rglob("*.py")) if p != SETTINGS]
    assert files
    reads = [line for path in files for line in environment_reads(path)]
    assert not reads, "read these through common/settings.py:\n" + "\n".join(reads)


def test_the_rule_sees_reads_and_lets_writes_pass() -> None:
    sample = ROOT / "tests" / "_sample_env_rule.py"  # inside ROOT: reads are named relative to it
    try:
        sample.write_text("import os\nfrom os import getenv\nos.environ['A'] = '1'\na = os.environ.get('B')\n"
                          "b = os.getenv('C')\nc = dict(os.environ)\n")
        assert sorted(int(line.split(":")[1]) for line in environment_reads(sample)) == [2, 4, 5, 6]
    finally:
        sample.unlink()
