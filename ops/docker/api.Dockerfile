# syntax=docker/dockerfile:1
# gpuq control-plane image: runs `gpuq api` (default) and `gpuq flower`.
# No torch, no CUDA, no model libraries: requirements-api.txt is its whole
# dependency set (ops/docker/lock.py writes it; tests/ops checks it covers every
# import of api/, common/, cli/ and the Celery app Flower loads).
#
# Build from the repository root:
#   docker build -f ops/docker/api.Dockerfile -t gpuq-api:0.1.0 .
# Pin the base by digest in production: --build-arg PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/gpuq
ENV PATH=/opt/gpuq/bin:$PATH
COPY ops/docker/requirements-api.txt /tmp/requirements-api.txt
RUN pip install -r /tmp/requirements-api.txt && pip check
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY common ./common
COPY api ./api
COPY cli ./cli
COPY client ./client
# worker/ ships too, without its model libraries: Flower imports the Celery app
# (gpuq.worker.celery_app), which imports no other worker module and must stay free of torch at import time.
COPY worker ./worker
# --no-deps: pyproject.toml also names the worker's libraries; this image must not get them.
RUN pip install --no-deps . \
 && python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)" \
 && gpuq --help > /dev/null

FROM ${PYTHON_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 gpuq \
 && useradd --system --uid 10001 --gid gpuq --home-dir /home/gpuq --create-home --shell /usr/sbin/nologin gpuq \
 && install -d -o gpuq -g gpuq /var/lib/gpuq /var/lib/gpuq/artifacts /var/cache/huggingface
COPY --from=build /opt/gpuq /opt/gpuq
ENV PATH=/opt/gpuq/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GPUQ_ENV=prod \
    GPUQ_API_HOST=0.0.0.0 \
    GPUQ_API_PORT=8000 \
    GPUQ_FLOWER_PORT=5555 \
    GPUQ_DATA_DIR=/var/lib/gpuq \
    GPUQ_ARTIFACT_DIR=/var/lib/gpuq/artifacts \
    HF_HOME=/var/cache/huggingface
USER 10001:10001
WORKDIR /home/gpuq
EXPOSE 8000 5555
# Liveness of the API process. Flower (same image) overrides this in compose/k8s
# with its own /healthcheck.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GPUQ_API_PORT', '8000'), timeout=4)"]
# tini: PID 1 that forwards signals and reaps children (uvicorn, Flower, Celery pools).
ENTRYPOINT ["/usr/bin/tini", "--", "gpuq"]
CMD ["api"]
