"""docker-compose.yml, validated by the real Compose v2 CLI (`config` needs no Docker engine)."""
from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.ops.manifests import OPS, ROOT, clean_env, compose_command, duration_s

EXAMPLE_ENV = OPS / "compose.env.example"
WORKER_PREFIX = "worker-"


def compose_config(*args: str, env_file: str = str(EXAMPLE_ENV)) -> subprocess.CompletedProcess[str]:
    """Run `compose config` on the repository's compose file with a scrubbed environment."""
    cmd = [*compose_command(), "--project-directory", str(ROOT), "-f", str(ROOT / "docker-compose.yml"),
           "--env-file", env_file, *args, "config", "--format", "json"]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, env=clean_env(), cwd=ROOT,
                          timeout=60)


@pytest.fixture(scope="module")
def rendered() -> dict[str, Any]:
    """The fully interpolated project, monitoring profile included."""
    result = compose_config("--profile", "monitoring")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def workers(project: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The worker services (one per GPU, one role each)."""
    return {name: svc for name, svc in project["services"].items() if name.startswith(WORKER_PREFIX)}


def test_compose_config_validates_the_stack_with_the_example_env(rendered: dict[str, Any]) -> None:
    assert set(rendered["services"]) == {"redis", "api", "worker-inference-gpu0", "worker-jobs-gpu1", "flower",
                                         "prometheus"}
    assert rendered["name"] == "gpuq"


def test_compose_refuses_to_render_without_the_secrets(tmp_path: Any) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = compose_config(env_file=str(empty))
    assert result.returncode != 0
    assert "GPUQ_" in result.stderr and "is missing a value" in result.stderr


def test_prometheus_runs_only_under_the_monitoring_profile() -> None:
    result = compose_config()
    assert result.returncode == 0, result.stderr
    assert "prometheus" not in json.loads(result.stdout)["services"]


def test_redis_sits_on_the_internal_network_only_and_needs_a_password(rendered: dict[str, Any]) -> None:
    redis = rendered["services"]["redis"]
    assert not redis.get("ports"), "Redis must not publish a port"
    assert set(redis["networks"]) == {"backend"}
    assert rendered["networks"]["backend"]["internal"] is True
    assert redis["environment"]["REDIS_PASSWORD"]
    assert redis["command"] == ["sh", "/usr/local/bin/gpuq-redis-entrypoint"]
    mounts = {(m["source"].removeprefix(str(ROOT) + "/"), m["target"]) for m in redis["volumes"]}
    assert ("ops/redis.conf", "/usr/local/etc/redis/redis.conf") in mounts
    assert ("ops/redis-entrypoint.sh", "/usr/local/bin/gpuq-redis-entrypoint") in mounts
    assert ("redis-data", "/data") in mounts
    assert redis["image"].startswith("redis:7.2.")
    assert redis["user"] == "999:999"


def test_every_app_service_reaches_redis_with_the_same_password(rendered: dict[str, Any]) -> None:
    password = rendered["services"]["redis"]["environment"]["REDIS_PASSWORD"]
    for name in ["api", "flower", *workers(rendered)]:
        env = rendered["services"][name]["environment"]
        assert env["GPUQ_REDIS_URL"] == f"redis://:{password}@redis:6379/0", name
        assert env["GPUQ_ENV"] == "prod", name
        assert "backend" in rendered["services"][name]["networks"], name


def test_each_worker_reserves_its_own_gpu_and_sees_it_as_device_0(rendered: dict[str, Any]) -> None:
    seen: list[str] = []
    for name, svc in workers(rendered).items():
        devices = svc["deploy"]["resources"]["reservations"]["devices"]
        assert len(devices) == 1, name
        device = devices[0]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"], name
        assert len(device["device_ids"]) == 1, name
        seen.append(device["device_ids"][0])
        # Only the reserved GPU is mapped into the container, where CUDA numbers it 0.
        assert svc["environment"]["CUDA_VISIBLE_DEVICES"] == "0", name
        assert name.endswith(f"-gpu{device['device_ids'][0]}"), "service name should say which GPU"
    assert sorted(seen) == ["0", "1"]


def test_inference_and_long_jobs_run_on_workers_of_their_own(rendered: dict[str, Any]) -> None:
    """Per-queue services: a threads-pool inference worker that batches, a prefork one for image and finetune."""
    def option(command: list[str], flag: str) -> str:
        return command[command.index(flag) + 1]

    roles = {name: (option(svc["command"], "--queues"), option(svc["command"], "--pool"))
             for name, svc in workers(rendered).items()}
    assert roles == {"worker-inference-gpu0": ("inference", "threads"), "worker-jobs-gpu1": ("image,finetune", "prefork")}
    inference = rendered["services"]["worker-inference-gpu0"]["environment"]
    assert inference["GPUQ_TASK_EVENTS"] == "false" and inference["GPUQ_BATCH_EXECUTORS"] == "1"
    queues = [q for queues, _ in roles.values() for q in queues.split(",")]
    assert sorted(queues) == ["finetune", "image", "inference"], "every queue has exactly one worker service"


def test_worker_node_names_are_unique(rendered: dict[str, Any]) -> None:
    names = []
    for svc in workers(rendered).values():
        command = svc["command"]
        names.append(command[command.index("--hostname") + 1])
        assert command[0] == "worker"
    assert len(set(names)) == len(names)


def test_worker_stop_grace_covers_the_soft_shutdown_window(rendered: dict[str, Any]) -> None:
    for name, svc in workers(rendered).items():
        soft = float(svc["environment"]["GPUQ_WORKER_SOFT_SHUTDOWN_S"])
        assert duration_s(svc["stop_grace_period"]) >= soft + 15, name
        # SIGTERM must start Celery's cold shutdown (soft window, then requeue), not a warm one.
        assert svc["environment"]["REMAP_SIGTERM"] == "SIGQUIT", name


def test_visibility_timeout_outlasts_the_job_time_limit(rendered: dict[str, Any]) -> None:
    for name in ["api", *workers(rendered)]:
        env = rendered["services"][name]["environment"]
        assert int(env["GPUQ_VISIBILITY_TIMEOUT_S"]) >= int(env["GPUQ_JOB_TIME_LIMIT_S"]) + 60, name


def test_flower_requires_basic_auth_and_listens_beyond_loopback(rendered: dict[str, Any]) -> None:
    flower = rendered["services"]["flower"]
    user, _, password = flower["environment"]["GPUQ_FLOWER_BASIC_AUTH"].partition(":")
    assert user and password
    command = flower["command"]
    assert command[0] == "flower" and command[command.index("--address") + 1] == "0.0.0.0"
    published = {p["target"]: p.get("host_ip") for p in flower["ports"]}
    assert published == {5555: "127.0.0.1"}, "Flower is published on loopback by default"
    assert flower["image"] == rendered["services"]["api"]["image"], "Flower runs from the API image"


def test_api_and_workers_share_the_artifact_volume_and_workers_the_hf_cache(rendered: dict[str, Any]) -> None:
    def volumes(name: str) -> dict[str, str]:
        mounts = rendered["services"][name]["volumes"]
        return {m["target"]: m["source"] for m in mounts if m["type"] == "volume"}

    api = volumes("api")
    assert api["/var/lib/gpuq/artifacts"] == "artifacts"
    for name in workers(rendered):
        assert volumes(name)["/var/lib/gpuq/artifacts"] == "artifacts"
        assert volumes(name)["/var/cache/huggingface"] == "hf-cache"
    assert {"redis-data", "artifacts", "hf-cache"} <= set(rendered["volumes"])


def test_services_that_need_it_have_a_healthcheck(rendered: dict[str, Any]) -> None:
    for name in ["redis", "api", "flower"]:
        assert rendered["services"][name]["healthcheck"]["test"], name
    # Workers inherit the image's HEALTHCHECK (worker.Dockerfile), which compose config does not show.
    for name in ["api", "flower", *workers(rendered)]:
        assert rendered["services"][name]["depends_on"]["redis"]["condition"] == "service_healthy", name


def test_prometheus_scrapes_the_api_and_every_worker(rendered: dict[str, Any]) -> None:
    with open(OPS / "prometheus" / "prometheus.yml") as fh:
        config = yaml.safe_load(fh)
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    api_port = rendered["services"]["api"]["environment"]["GPUQ_API_PORT"]
    assert f"api:{api_port}" in targets
    for name, svc in workers(rendered).items():
        assert f"{name}:{svc['environment']['GPUQ_WORKER_METRICS_PORT']}" in targets
    prometheus = rendered["services"]["prometheus"]
    assert "backend" in prometheus["networks"]
    assert prometheus["profiles"] == ["monitoring"]


def test_promtool_accepts_the_prometheus_config() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package: prometheus)")
    result = subprocess.run([promtool, "check", "config", str(OPS / "prometheus" / "prometheus.yml")],
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
