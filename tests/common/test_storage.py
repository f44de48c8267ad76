"""The local artifact store: safe names, atomic writes, per-tenant/per-job scoping."""
from __future__ import annotations

from pathlib import Path

import pytest

from gpuq.common.errors import InvalidInput, NotFound
from gpuq.common.jobs.modelref import check_model_ref
from gpuq.common.storage import LocalArtifactStore


@pytest.mark.parametrize("name", ["../x", "a/../../b", "/etc/passwd", "", ".hidden", "a//b", "a\\b", "x" * 600,
                                  "ok/..", "name\x00"])
def test_unsafe_artifact_names_are_rejected(tmp_path: Path, name: str) -> None:
    store = LocalArtifactStore(tmp_path)
    with pytest.raises(InvalidInput):
        store.put_bytes("t", "job", name, b"x")


def test_artifacts_are_scoped_per_tenant_and_job(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    info = store.put_bytes("t1", "j1", "out/image-0.png", b"abc")
    assert info.size == 3 and info.content_type == "image/png"
    assert [a.name for a in store.list("t1", "j1")] == ["out/image-0.png"]
    assert store.list("t2", "j1") == []
    with pytest.raises(NotFound):
        store.local_path("t2", "j1", "out/image-0.png")


def test_model_refs_outside_roots_are_refused(tmp_path: Path) -> None:
    inside = tmp_path / "models" / "m"
    inside.mkdir(parents=True)
    roots = [tmp_path / "models"]
    assert check_model_ref(str(inside), roots) == str(inside.resolve())
    assert check_model_ref("org/name", roots) == "org/name"
    for bad in ["/etc", str(tmp_path / "models" / ".." / "x"), "../models", "a/b/c", "org/../x"]:
        with pytest.raises(InvalidInput):
            check_model_ref(bad, roots)
