"""ops/docker: the two images' Dockerfiles, their pinned requirement lists, and the API image's promise
that api/, cli/, common/ and Flower's Celery app run without the worker's model libraries."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.ops.manifests import OPS, ROOT, lock_module

DOCKER = OPS / "docker"
LOCK = lock_module()


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    lines = [ln for ln in dockerfile.read_text().splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage(dockerfile: Path) -> list[tuple[str, str]]:
    """The instructions of the last build stage."""
    steps = instructions(dockerfile)
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def pins(path: Path) -> dict[str, str]:
    """name -> version of a fully pinned requirements file; fails on anything not pinned with ==."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        assert match, f"{path.name}: not an exact pin: {line!r}"
        out[LOCK.canonical(match[1])] = match[2]
    return out


def project_dependencies() -> list[Requirement]:
    """The root pyproject.toml's runtime dependencies."""
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return [Requirement(d) for d in tomllib.load(fh)["project"]["dependencies"]]


API_PINS = pins(DOCKER / "requirements-api.txt")
WORKER_PINS = pins(DOCKER / "requirements-worker.txt")


@pytest.mark.parametrize("name", ["api", "worker"])
def test_images_run_as_non_root_with_a_healthcheck_tini_and_a_pinned_base(name: str) -> None:
    dockerfile = DOCKER / f"{name}.Dockerfile"
    steps = instructions(dockerfile)
    base_args = [rest for word, rest in steps if word == "ARG" and "_IMAGE=" in rest]
    assert len(base_args) == 1
    image = base_args[0].partition("=")[2]
    assert re.search(r":\d+\.\d+(\.\d+)?-", image), f"base image not pinned to a version: {image}"
    final = final_stage(dockerfile)
    users = [rest for word, rest in final if word == "USER"]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    assert any(word == "HEALTHCHECK" for word, _ in final)
    entrypoint = [rest for word, rest in final if word == "ENTRYPOINT"][-1]
    assert entrypoint.startswith('["/usr/bin/tini", "--", "gpuq"]')


def test_worker_image_is_cuda_based_and_turns_sigterm_into_a_soft_shutdown() -> None:
    steps = instructions(DOCKER / "worker.Dockerfile")
    assert any(word == "ARG" and rest.startswith("CUDA_IMAGE=nvidia/cuda:") for word, rest in steps)
    env = " ".join(rest for word, rest in final_stage(DOCKER / "worker.Dockerfile") if word == "ENV")
    assert "REMAP_SIGTERM=SIGQUIT" in env
    assert f"torch=={LOCK.TORCH_VERSION}" in (DOCKER / "requirements-worker.txt").read_text()


def test_api_image_installs_gpuq_without_its_dependencies() -> None:
    runs = [rest for word, rest in instructions(DOCKER / "api.Dockerfile") if word == "RUN"]
    assert any("pip install --no-deps ." in run for run in runs)
    assert any("pip install -r /tmp/requirements-api.txt" in run for run in runs)


def test_requirement_files_are_pinned_and_satisfy_pyproject() -> None:
    for requirement in project_dependencies():
        name = LOCK.canonical(requirement.name)
        assert name in WORKER_PINS, f"{name} missing from requirements-worker.txt: run ops/docker/lock.py"
        assert requirement.specifier.contains(WORKER_PINS[name], prereleases=True), name
        if name in LOCK.WORKER_ONLY:
            continue
        assert name in API_PINS, f"{name} missing from requirements-api.txt: run ops/docker/lock.py"
        assert requirement.specifier.contains(API_PINS[name], prereleases=True), name
    assert WORKER_PINS["torch"] == LOCK.TORCH_VERSION


def test_api_requirements_hold_no_worker_only_library() -> None:
    assert not set(API_PINS) & set(LOCK.WORKER_ONLY)
    assert not any(name.startswith(("nvidia-", "triton")) for name in API_PINS)
    shared = set(API_PINS) & set(WORKER_PINS)
    disagree = {n: (API_PINS[n], WORKER_PINS[n]) for n in shared if API_PINS[n] != WORKER_PINS[n]}
    assert not disagree, f"the two images pin different versions: {disagree}"


def run_under_api_dependency_set(tmp_path: Path, body: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``body`` with every module outside requirements-api.txt blocked (what the API image can import)."""
    script = tmp_path / "gate.py"
    # Project packages count only where the image COPYs them in.
    copied = sorted({rest.split()[-1].strip("./") for word, rest in instructions(DOCKER / "api.Dockerfile")
                     if word == "COPY" and not rest.startswith("--from") and not rest.split()[0].endswith(
                         (".txt", ".toml", ".md"))} | {"tests", "gpuq"})  # gpuq: the one installed package
    script.write_text(textwrap.dedent(f"""
        import importlib.abc, importlib.metadata, sys
        ALLOWED = {sorted(API_PINS)!r}
        # python -m venv (3.11) also seeds these into the image's venv.
        ALLOWED += ["pip", "setuptools"]
        PROJECT = set({copied!r})
        canon = lambda n: n.lower().replace("_", "-").replace(".", "-")
        owners = importlib.metadata.packages_distributions()

        class Gate(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                top = name.partition(".")[0]
                if top == "gpuq":  # the project itself: only the folders the image copies in
                    part = name.split(".")[1] if "." in name else None
                    if part is None or part in PROJECT:
                        return None
                    raise ModuleNotFoundError(f"{{name}}: the image does not copy {{part}}/")
                if top in sys.stdlib_module_names or top in PROJECT or top not in owners:
                    return None
                if any(canon(d) in ALLOWED for d in owners[top]):
                    return None
                # What a missing package raises, so `except ModuleNotFoundError` fallbacks behave.
                raise ModuleNotFoundError(f"{{name}} (from {{owners[top]}}) is not in requirements-api.txt")

        sys.meta_path.insert(0, Gate())
    """) + textwrap.dedent(body))
    full_env = {"GPUQ_REDIS_URL": "redis://127.0.0.1:1/0", "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", **env}
    return subprocess.run([sys.executable, str(script)], check=False, capture_output=True, text=True,
                          cwd=ROOT, env=full_env, timeout=120)


def test_api_dependency_set_runs_the_api_cli_and_flowers_celery_app(tmp_path: Path) -> None:
    """Import what the API image runs with every module outside requirements-api.txt blocked."""
    result = run_under_api_dependency_set(tmp_path, """
        import gpuq.cli.main
        gpuq.cli.main.build_parser()
        import gpuq.api.main
        gpuq.api.main.create_app()
        import gpuq.worker.celery_app
        import flower.command
        import uvicorn
        print("ok")
    """)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_api_dependency_set_parses_an_upload_of_every_format(tmp_path: Path) -> None:
    """POST /v1/files of csv, jsonl, parquet and an image through the real app, under the API's packages alone."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    uploads = tmp_path / "uploads"
    uploads.mkdir()
    (uploads / "rows.csv").write_text("text,label\nfine,1\nbad,0\n")
    (uploads / "rows.jsonl").write_text('{"text": "fine"}\n{"text": "bad"}\n')
    pq.write_table(pa.table({"text": ["fine", "bad"]}), uploads / "rows.parquet")
    (uploads / "pixel.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(32))
    (uploads / "broken.parquet").write_bytes(b"not parquet at all")
    (uploads / "binary.csv").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe" + bytes(16))  # undecodable header
    result = run_under_api_dependency_set(tmp_path, f"""
        import json, pathlib
        from starlette.testclient import TestClient
        import gpuq.api.main
        client = TestClient(gpuq.api.main.create_app(), headers={{"Authorization": "Bearer k-0123"}})
        out = {{}}
        for path in sorted(pathlib.Path({str(uploads)!r}).iterdir()):
            resp = client.post("/v1/files", files={{"file": (path.name, path.read_bytes())}})
            out[path.name] = [resp.status_code, resp.json().get("rows"), resp.json().get("error", {{}}).get("type")]
        print(json.dumps(out))
    """, GPUQ_API_KEYS="t:k-0123", GPUQ_FILES_DIR=str(tmp_path / "files"))
    assert result.returncode == 0, result.stderr[-3000:]
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    assert answers == {"rows.csv": [201, 2, None], "rows.jsonl": [201, 2, None], "rows.parquet": [201, 2, None],
                       "pixel.png": [201, 1, None], "broken.parquet": [422, None, "invalid_input"],
                       "binary.csv": [422, None, "invalid_input"]}


def test_dockerignore_admits_exactly_what_the_dockerfiles_copy() -> None:
    admitted = {line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.startswith("!")}
    copied = set()
    for name in ("api", "worker"):
        for word, rest in instructions(DOCKER / f"{name}.Dockerfile"):
            if word == "COPY" and not rest.startswith("--from"):
                copied.update(src.rstrip("/") for src in rest.split()[:-1])
    assert copied == admitted
    assert all((ROOT / src).exists() for src in copied), "a COPY source is missing from the repository"
