"""The distribution installs one top-level package, ``gpuq``, whatever folders the repository keeps."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.ops.manifests import ROOT


def _wheel(out: Path) -> zipfile.ZipFile:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True, text=True, timeout=240)
    (wheel,) = out.glob("gpuq-*.whl")
    return zipfile.ZipFile(wheel)


def test_wheel_installs_only_the_gpuq_package(tmp_path: Path) -> None:
    names = _wheel(tmp_path).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"gpuq"}, f"top-level entries besides gpuq: {sorted(top - {'gpuq'})}"
    for package in ("api", "cli", "client", "common", "ui", "worker"):
        assert f"gpuq/{package}/__init__.py" in names
    assert "gpuq/worker/handlers/inference.py" in names  # subpackages keep their place under gpuq


def test_console_script_points_into_the_namespace(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path)
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    assert "gpuq = gpuq.cli.main:main" in wheel.read(entry_points).decode()


def test_client_imports_from_the_namespace_outside_the_checkout(tmp_path: Path) -> None:
    # From another directory, as a service that installed gpuq for its client would.
    code = "from gpuq.client import Client, AsyncClient; import importlib.util as u; print(u.find_spec('client'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "None", "a top-level `client` package is installed beside gpuq"
