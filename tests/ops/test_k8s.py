"""ops/k8s: schema validation (Kubernetes OpenAPI + vendored KEDA CRD schemas), kustomize, and the rules
that tie the manifests to gpuq's settings."""
from __future__ import annotations

import copy
import json
import subprocess
from functools import cache
from typing import Any
from urllib.parse import urlparse

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.ops.manifests import (
    K8S,
    OPS,
    SCHEMAS,
    config_map_data,
    find,
    k8s_files,
    k8s_objects,
    kubectl_command,
    load_docs,
    one,
)

OBJECTS = k8s_objects()
NAMESPACE = "gpuq"
# Oldest Kubernetes minor these manifests target, and the newest the validator ships schemas for.
K8S_VERSIONS = ["1.29", kubernetes_validate.latest_version()]
KEDA_KINDS = {"ScaledObject", "TriggerAuthentication"}


def label(obj: dict[str, Any]) -> str:
    """kind/name, for test ids and messages."""
    return f"{obj['kind']}/{obj['metadata']['name']}"


@cache
def keda_validator(kind: str) -> jsonschema.protocols.Validator:
    """A validator for one KEDA kind, from the CRD's openAPIV3Schema vendored in tests/ops/schemas/keda."""
    with open(SCHEMAS / "keda" / f"{kind.lower()}_v1alpha1.json") as fh:
        schema = json.load(fh)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema)


def validate(obj: dict[str, Any], version: str) -> None:
    """Strict schema validation: Kubernetes kinds by kubernetes-validate, KEDA kinds by the CRD schema."""
    if obj["apiVersion"].startswith("keda.sh/"):
        keda_validator(obj["kind"]).validate(obj)
    else:
        kubernetes_validate.validate(obj, version, strict=True)


def workers() -> list[dict[str, Any]]:
    """The worker Deployments."""
    deployments = find(OBJECTS, "Deployment")
    return [d for d in deployments if d["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    """The pod template spec of a workload."""
    return dict(obj["spec"]["template"]["spec"])


def container(obj: dict[str, Any]) -> dict[str, Any]:
    """The single container of a workload."""
    containers = pod_spec(obj)["containers"]
    assert len(containers) == 1, label(obj)
    return dict(containers[0])


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether a matchLabels-style selector matches a label set."""
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("obj", OBJECTS, ids=label)
def test_every_manifest_validates_against_its_schema(obj: dict[str, Any], version: str) -> None:
    validate(obj, version)


def test_the_validators_reject_broken_manifests() -> None:
    deployment = copy.deepcopy(workers()[0])
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 90  # misspelt field
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment, K8S_VERSIONS[0])
    scaled = copy.deepcopy(find(OBJECTS, "ScaledObject")[0])
    scaled["spec"]["triggers"][0]["metadata"]["targetValue"] = 4  # must be a string
    with pytest.raises(jsonschema.ValidationError):
        validate(scaled, K8S_VERSIONS[0])
    del scaled["spec"]["scaleTargetRef"]
    with pytest.raises(jsonschema.ValidationError):
        validate(scaled, K8S_VERSIONS[0])


def test_kustomization_lists_every_manifest_and_nothing_else() -> None:
    kustomization = load_docs(K8S / "kustomization.yaml")[0]
    assert sorted(kustomization["resources"]) == sorted(p.name for p in k8s_files())
    assert kustomization["namespace"] == NAMESPACE


def test_kustomize_renders_every_object_into_the_namespace_with_registry_images() -> None:
    result = subprocess.run([*kubectl_command(), "kustomize", str(K8S)], check=False, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rendered = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert sorted(map(label, rendered)) == sorted(map(label, OBJECTS))
    images = load_docs(K8S / "kustomization.yaml")[0]["images"]
    wanted = {i["name"]: f"{i['newName']}:{i['newTag']}" for i in images}
    for obj in rendered:
        validate(obj, K8S_VERSIONS[-1])
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == NAMESPACE, label(obj)
        if "template" in obj.get("spec", {}):
            image = container(obj)["image"]
            assert image.split(":")[0] not in wanted, f"{label(obj)} kept the unqualified image {image}"


def test_namespaced_objects_declare_the_namespace() -> None:
    for obj in OBJECTS:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == NAMESPACE, label(obj)


def test_every_queue_has_a_worker_deployment_scaled_object_and_pdb() -> None:
    queues = config_map_data(OBJECTS)["GPUQ_QUEUES"].split(",")
    assert queues == ["inference", "image", "finetune"]
    for queue in queues:
        deployment = one(OBJECTS, "Deployment", f"gpuq-worker-{queue}")
        args = container(deployment)["args"]
        assert args[0] == "worker" and args[args.index("--queues") + 1] == queue
        assert "$(POD_NAME)" in args[args.index("--hostname") + 1], "node names must be unique per pod"
        one(OBJECTS, "ScaledObject", f"gpuq-worker-{queue}")
        pdb = one(OBJECTS, "PodDisruptionBudget", f"gpuq-worker-{queue}")
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels)
        assert pdb["spec"]["maxUnavailable"] == 1


def test_worker_grace_period_exceeds_the_soft_shutdown_window() -> None:
    soft = int(config_map_data(OBJECTS)["GPUQ_WORKER_SOFT_SHUTDOWN_S"])
    for deployment in workers():
        assert pod_spec(deployment)["terminationGracePeriodSeconds"] >= soft + 15, label(deployment)
        env = {e["name"]: e.get("value") for e in container(deployment).get("env", [])}
        assert env.get("REMAP_SIGTERM") == "SIGQUIT", label(deployment)


def test_workers_request_exactly_one_gpu_and_probe_the_metrics_server() -> None:
    port = int(config_map_data(OBJECTS)["GPUQ_WORKER_METRICS_PORT"])
    for deployment in workers():
        c = container(deployment)
        assert c["resources"]["requests"]["nvidia.com/gpu"] == 1, label(deployment)
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 1, label(deployment)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["metrics"] == port
        for probe in ("startupProbe", "readinessProbe"):
            assert c[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}, (label(deployment), probe)
        # Liveness must not depend on Redis (worker/metrics_server.py): /livez, not /healthz.
        assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}, label(deployment)
        assert "replicas" not in deployment["spec"], "KEDA owns worker replicas"


def test_scaled_objects_target_existing_deployments_on_their_queue_load() -> None:
    api_service = one(OBJECTS, "Service", "gpuq-api")
    api_port = api_service["spec"]["ports"][0]["port"]
    for scaled in find(OBJECTS, "ScaledObject"):
        ref = scaled["spec"]["scaleTargetRef"]
        assert ref.get("kind", "Deployment") == "Deployment" and ref.get("apiVersion", "apps/v1") == "apps/v1"
        deployment = one(OBJECTS, "Deployment", ref["name"])
        args = container(deployment)["args"]
        queue = args[args.index("--queues") + 1]
        spec = scaled["spec"]
        assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"], label(scaled)
        assert spec["cooldownPeriod"] > 0 and spec["pollingInterval"] > 0
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "metrics-api"
        meta = trigger["metadata"]
        assert meta["valueLocation"] == f"queues.{queue}.load", label(scaled)
        assert meta["authMode"] == "bearer"
        url = urlparse(meta["url"])
        assert url.path == "/v1/admin/queues"
        # KEDA runs in its own namespace: the Service must be named with its namespace.
        assert url.hostname == f"gpuq-api.{NAMESPACE}.svc.cluster.local" and url.port == api_port
        assert float(meta["targetValue"]) > 0
        auth = one(OBJECTS, "TriggerAuthentication", trigger["authenticationRef"]["name"])
        assert {r["parameter"] for r in auth["spec"]["secretTargetRef"]} == {"token"}


def test_trigger_authentication_reads_an_existing_secret_key() -> None:
    for auth in find(OBJECTS, "TriggerAuthentication"):
        for ref in auth["spec"]["secretTargetRef"]:
            secret = one(OBJECTS, "Secret", ref["name"])
            assert ref["key"] in secret["stringData"], label(auth)


def test_secret_placeholders_are_refused_by_gpuq_in_prod() -> None:
    from pydantic import ValidationError

    from gpuq.common.settings import Settings

    values = one(OBJECTS, "Secret", "gpuq-secrets")["stringData"]
    for field, env in [("api_keys", "GPUQ_API_KEYS"), ("admin_keys", "GPUQ_ADMIN_KEYS"),
                       ("flower_basic_auth", "GPUQ_FLOWER_BASIC_AUTH")]:
        with pytest.raises(ValidationError, match="placeholder"):
            Settings(env="prod", **{field: values[env]})
    assert "changeme" in values["GPUQ_REDIS_URL"] and values["GPUQ_SECRET_KEY"] == "changeme"
    assert one(OBJECTS, "Secret", "gpuq-redis")["stringData"]["password"] == "changeme"
    assert one(OBJECTS, "Secret", "gpuq-keda")["stringData"]["token"] == "changeme"


def test_settings_config_map_is_consistent() -> None:
    data = config_map_data(OBJECTS)
    assert data["GPUQ_ENV"] == "prod"
    assert int(data["GPUQ_VISIBILITY_TIMEOUT_S"]) >= int(data["GPUQ_JOB_TIME_LIMIT_S"]) + 60
    assert data["GPUQ_API_HOST"] == "0.0.0.0"


def test_api_readiness_does_not_wait_for_workers() -> None:
    # /readyz needs a live worker; with workers scaled to zero the API would leave its Service
    # and KEDA could no longer read the queue load that scales them back up.
    api = one(OBJECTS, "Deployment", "gpuq-api")
    assert container(api)["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["spec"]["replicas"] >= 2
    pdb = one(OBJECTS, "PodDisruptionBudget", "gpuq-api")
    assert selects(pdb["spec"]["selector"]["matchLabels"], api["spec"]["template"]["metadata"]["labels"])


def test_flower_runs_from_the_api_image_with_basic_auth() -> None:
    flower = one(OBJECTS, "Deployment", "gpuq-flower")
    c = container(flower)
    assert c["image"] == container(one(OBJECTS, "Deployment", "gpuq-api"))["image"]
    assert c["args"][:1] == ["flower"] and c["args"][c["args"].index("--address") + 1] == "0.0.0.0"
    assert {"secretRef": {"name": "gpuq-secrets"}} in c["envFrom"]
    assert "GPUQ_FLOWER_BASIC_AUTH" in one(OBJECTS, "Secret", "gpuq-secrets")["stringData"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/healthcheck"


def test_services_select_pods_that_exist() -> None:
    workloads = find(OBJECTS, "Deployment") + find(OBJECTS, "StatefulSet")
    for service in find(OBJECTS, "Service"):
        selector = service["spec"]["selector"]
        matches = [w for w in workloads if selects(selector, w["spec"]["template"]["metadata"]["labels"])]
        assert len(matches) == 1, label(service)


def test_pods_run_as_non_root_with_pinned_images_and_known_volumes() -> None:
    claims = {p["metadata"]["name"] for p in find(OBJECTS, "PersistentVolumeClaim")}
    config_maps = {c["metadata"]["name"] for c in find(OBJECTS, "ConfigMap")}
    secrets = {s["metadata"]["name"] for s in find(OBJECTS, "Secret")}
    for workload in find(OBJECTS, "Deployment") + find(OBJECTS, "StatefulSet"):
        spec = pod_spec(workload)
        # Service links would inject GPUQ_API_PORT=tcp://... (from Service gpuq-api) into gpuq's settings.
        assert spec["enableServiceLinks"] is False, label(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True, label(workload)
        assert spec["securityContext"]["runAsUser"] != 0, label(workload)
        image = container(workload)["image"]
        assert ":" in image and not image.endswith(":latest"), label(workload)
        for source in container(workload).get("envFrom", []):
            if "configMapRef" in source:
                assert source["configMapRef"]["name"] in config_maps
            if "secretRef" in source:
                assert source["secretRef"]["name"] in secrets
        for volume in spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, label(workload)
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, label(workload)
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets, label(workload)


def test_shared_volumes_are_read_write_many() -> None:
    for claim in find(OBJECTS, "PersistentVolumeClaim"):
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"], label(claim)


def test_redis_config_map_carries_the_committed_conf_and_entrypoint() -> None:
    data = config_map_data(OBJECTS, "gpuq-redis-config")
    assert data["redis.conf"] == (OPS / "redis.conf").read_text()
    assert data["entrypoint.sh"] == (OPS / "redis-entrypoint.sh").read_text()
    redis = one(OBJECTS, "StatefulSet", "redis")
    assert redis["spec"]["serviceName"] == "redis"
    assert one(OBJECTS, "Service", "redis")["spec"]["clusterIP"] == "None"
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    env = {e["name"]: e for e in container(redis)["env"]}
    assert env["REDIS_PASSWORD_FILE"]["value"].startswith("/run/secrets/redis/")


def test_redis_accepts_only_gpuq_clients() -> None:
    policy = one(OBJECTS, "NetworkPolicy", "redis-from-gpuq-only")
    redis = one(OBJECTS, "StatefulSet", "redis")
    redis_labels = redis["spec"]["template"]["metadata"]["labels"]
    assert selects(policy["spec"]["podSelector"]["matchLabels"], redis_labels)
    allowed = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    for name in ["gpuq-api", "gpuq-flower", *(w["metadata"]["name"] for w in workers())]:
        labels = one(OBJECTS, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert selects(allowed, labels), name
