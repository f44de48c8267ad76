"""Exit 0 when .venv already holds what pyproject.toml asks for (with the given extras) and gpuq is installed
from this checkout; 1 otherwise. Lets ./scripts/up and ./scripts/test skip a minute of pip on a warm venv."""
from __future__ import annotations

from importlib import metadata
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def wanted(project: dict[str, object], extras: list[str]) -> list[Requirement]:
    """The runtime requirements plus those of ``extras``, self-references (gpuq[models,ui]) expanded."""
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})  # type: ignore[assignment]
    out = [Requirement(d) for d in project["dependencies"]]  # type: ignore[attr-defined]
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for spec in optional.get(extra, []):
            req = Requirement(spec)
            if req.name == project["name"]:
                todo += sorted(req.extras)
            else:
                out.append(req)
    return out


def satisfied(req: Requirement) -> bool:
    """Whether the installed distribution meets the requirement (markers that do not apply count as met)."""
    if req.marker is not None and not req.marker.evaluate():
        return True
    try:
        return req.specifier.contains(metadata.version(req.name), prereleases=True)
    except metadata.PackageNotFoundError:
        return False


def main(extras: list[str]) -> int:
    """0 when nothing needs installing."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    try:
        import gpuq.cli
    except ImportError:
        return 1
    if Path(gpuq.cli.__file__).resolve().parent != (ROOT / "cli").resolve():
        return 1  # installed from another checkout
    return 0 if all(satisfied(r) for r in wanted(project, extras)) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
