# syntax=docker/dockerfile:1
# gpuq GPU worker image: `gpuq worker`, one container (one Celery process) per GPU.
#
# CUDA: torch==2.9.1 from PyPI is the CUDA 12.8 build and brings its own CUDA
# user-space libraries (cuBLAS, cuDNN, NCCL, ... as nvidia-* wheels pinned in
# requirements-worker.txt). The CUDA base image matches that toolkit version and
# supplies the NVIDIA_* environment the container toolkit uses to inject the
# host driver; the small "base" flavour is enough (the cudnn-runtime flavour would
# duplicate ~3 GB of libraries torch already ships). Host driver >= 570 (CUDA 12.8).
#
# Build from the repository root:
#   docker build -f ops/docker/worker.Dockerfile -t gpuq-worker:0.1.0 .
# Pin the base by digest in production: --build-arg CUDA_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04@sha256:...
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04

FROM ${CUDA_IMAGE} AS build
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.12 python3.12-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3.12 -m venv /opt/gpuq
ENV PATH=/opt/gpuq/bin:$PATH
COPY ops/docker/requirements-worker.txt /tmp/requirements-worker.txt
RUN pip install -r /tmp/requirements-worker.txt && pip check
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY common ./common
COPY api ./api
COPY cli ./cli
COPY client ./client
COPY worker ./worker
RUN pip install --no-deps . && pip check && gpuq --help > /dev/null

FROM ${CUDA_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.12 ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 gpuq \
 && useradd --system --uid 10001 --gid gpuq --home-dir /home/gpuq --create-home --shell /usr/sbin/nologin gpuq \
 && install -d -o gpuq -g gpuq /var/lib/gpuq /var/lib/gpuq/artifacts /var/cache/huggingface
COPY --from=build /opt/gpuq /opt/gpuq
# REMAP_SIGTERM=SIGQUIT: billiard/Celery read it at import. It turns the SIGTERM
# that Docker and Kubernetes send into Celery's cold shutdown, which first runs the
# soft-shutdown window (worker_soft_shutdown_timeout = GPUQ_WORKER_SOFT_SHUTDOWN_S)
# and then cancels and requeues the unfinished job at once. Without it SIGTERM is a
# warm shutdown that waits for the job however long it runs, the orchestrator
# SIGKILLs the container at the end of its grace period, and the job comes back
# only after the broker's visibility timeout (GPUQ_VISIBILITY_TIMEOUT_S).
ENV PATH=/opt/gpuq/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    REMAP_SIGTERM=SIGQUIT \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    GPUQ_ENV=prod \
    GPUQ_WORKER_METRICS_PORT=9100 \
    GPUQ_DATA_DIR=/var/lib/gpuq \
    GPUQ_ARTIFACT_DIR=/var/lib/gpuq/artifacts \
    HF_HOME=/var/cache/huggingface
USER 10001:10001
WORKDIR /home/gpuq
EXPOSE 9100
# Worker liveness (the metrics server answers /healthz once the worker is up).
# start-period covers model preload (GPUQ_PRELOAD) on first start.
HEALTHCHECK --interval=15s --timeout=5s --start-period=600s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GPUQ_WORKER_METRICS_PORT', '9100'), timeout=4)"]
ENTRYPOINT ["/usr/bin/tini", "--", "gpuq"]
CMD ["worker"]
