"""Package layout: the repository keeps its top-level folders, the distribution installs one package, ``gpuq``.

``api/`` installs as ``gpuq.api``, ``worker/`` as ``gpuq.worker`` and so on, so a service that installs gpuq for
its client never has a package of its own called ``api`` or ``client`` shadowed. Everything else is declared in
pyproject.toml; only the computed package list lives here.
"""
from setuptools import find_packages, setup

TOP_LEVEL = ("api", "cli", "client", "common", "ui", "worker")

setup(
    packages=[f"gpuq.{name}" for name in find_packages(include=[f"{top}*" for top in TOP_LEVEL])],
    package_dir={f"gpuq.{top}": top for top in TOP_LEVEL},
)
