"""The README's Quick start, run as written: every shell and Python block, in order, in a second shell next to a
real ``gpuq up`` started the way step 1 says (``./scripts/up``); then the API examples below it. The Traditional
Chinese Quick start must carry the same commands.

The checkout the blocks run in is a directory of its own: the repository's code and scripts linked or copied in,
its ``.venv`` this test's virtualenv (so ``./scripts/up`` finds gpuq installed and skips pip), its own ``var/``
and free ports, so it never meets a developer's own ``gpuq up``.
"""
from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import ROOT
from tests.support.upstack import Up, up_env

README = ROOT / "README.md"
BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
LINKED = ("api", "cli", "client", "common", "ui", "worker")
COPIED = ("scripts", "pyproject.toml", "setup.py", "README.md")


def section(text: str, heading: str) -> str:
    """The README from ``## heading`` to the next ``## `` heading."""
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


def blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of every bash and python block, in order."""
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(text)]


def commands(code: str) -> list[str]:
    """A block's commands without comments and blank lines (what both languages must share)."""
    lines = (re.sub(r"\s+#\s.*$|^#\s.*$", "", line).rstrip() for line in code.splitlines())
    return [line for line in lines if line.strip()]


def quick_start(heading: str) -> list[tuple[str, str]]:
    return blocks(section(README.read_text(), heading))


def api_examples() -> list[tuple[str, str]]:
    """The shell blocks of "The API in brief" above its first sub-section, then every block of its
    "Speaking OpenAI" sub-section (the official SDK against the same stack)."""
    parts = section(README.read_text(), "The API in brief").split("\n### ")
    openai = next(part for part in parts if part.startswith("Speaking OpenAI\n"))
    return [(lang, code) for lang, code in blocks(parts[0]) if lang == "bash"] + blocks(openai)


def test_the_chinese_quick_start_carries_the_same_commands() -> None:
    english, chinese = quick_start("Quick start"), quick_start("快速入門（繁體中文）")
    assert len(english) >= 5
    assert [(lang, commands(code)) for lang, code in chinese] == [(lang, commands(code)) for lang, code in english]


def script(steps: list[tuple[str, str]]) -> str:
    """One bash script running the blocks in order (python blocks through the activated venv's python)."""
    parts = ["set -eo pipefail"]
    for i, (lang, code) in enumerate(steps, 1):
        parts.append(f"echo '=== README block {i} ({lang})' >&2")
        parts.append(code if lang == "bash" else f"python - <<'README_PYTHON'\n{code}README_PYTHON")
    return "\n".join(parts) + "\n"


def checkout(where: Path) -> Path:
    """A checkout to run the README in: the code linked, the scripts copied, this venv as its .venv."""
    where.mkdir()
    for name in LINKED:
        (where / name).symlink_to(ROOT / name)
    for name in COPIED:
        src = ROOT / name
        shutil.copytree(src, where / name) if src.is_dir() else shutil.copy2(src, where / name)
    (where / ".venv").symlink_to(Path(sys.prefix))
    return where


@pytest.mark.timeout(900)
def test_the_quick_start_runs_as_written_against_gpuq_up(tmp_path: Path) -> None:
    steps = quick_start("Quick start")
    first_lang, first = steps[0]
    assert first_lang == "bash" and commands(first) == ["./scripts/up"], "step 1 starts the stack"
    repo = checkout(tmp_path / "gpuq")
    env = up_env()
    # ./scripts/up would otherwise pip-install gpuq from this temporary checkout into the test's own venv.
    warm = subprocess.run([sys.executable, "scripts/venv_ok.py", "models", "ui"], cwd=repo, env=env, check=False)
    assert warm.returncode == 0, "the venv lacks what ./scripts/up installs: run ./scripts/test to install it"
    up = Up(repo, env=env, command=first, logs=tmp_path)
    try:
        up.wait_banner(timeout=600)
        rest = [*steps[1:], *api_examples()]
        (tmp_path / "readme.sh").write_text(script(rest))
        ran = subprocess.run(["bash", str(tmp_path / "readme.sh")], cwd=repo, env=env, text=True, check=False,
                             capture_output=True, timeout=600)
        failed_at = (re.findall(r"=== README block .*", ran.stderr) or ["before the first block"])[-1]
        assert ran.returncode == 0, f"{failed_at}\n{ran.stdout[-3000:]}\n{ran.stderr[-3000:]}"
        for promised in ("gpt2", "all-MiniLM-L6-v2", "bert-sentiment", '"result"', "completed", "chatcmpl-",
                         "\n384\n"):
            assert promised in ran.stdout, promised
        assert (repo / "out" / "outputs.parquet").stat().st_size > 0
        took = up.signal(signal.SIGINT)  # Ctrl-C in step 1's terminal
        assert up.proc.returncode == 0 and not up.left_behind() and took < 30
    finally:
        up.kill_all()
