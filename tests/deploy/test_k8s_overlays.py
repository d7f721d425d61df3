"""Shared mode on Kubernetes: the deploy/k8s-shared and deploy/k8s-migrate overlays, read
as files and, where kubectl is installed, built with `kubectl kustomize`."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.deploy_files import (
    K8S,
    K8S_MIGRATE,
    K8S_SHARED,
    config_variables,
    container,
    image_uid,
    k8s_docs,
    load_yaml,
    pod_spec,
    run,
    yaml,
)


def kustomization(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(folder / "kustomization.yaml")
    return data


def patches(folder: Path) -> list[dict[str, Any]]:
    """Every patch of a kustomization, from its file or inline."""
    found = []
    for patch in kustomization(folder).get("patches", []):
        text = (folder / patch["path"]).read_text() if "path" in patch else patch["patch"]
        found.append(yaml.safe_load(text))
    return found


def patch_of(folder: Path, kind: str) -> dict[str, Any]:
    [patch] = [p for p in patches(folder) if p["kind"] == kind and "$patch" not in p]
    return patch


def shared_container() -> dict[str, Any]:
    [main] = patch_of(K8S_SHARED, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert isinstance(main, dict)
    return main


def migrate_job() -> dict[str, Any]:
    job: dict[str, Any] = load_yaml(K8S_MIGRATE / "job.yaml")
    return job


def secret_refs(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}


def mounted_from(pod: dict[str, Any], main: dict[str, Any], path: str) -> dict[str, Any]:
    """The pod volume a container mounts at the directory holding `path` (or at `path`)."""
    mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    name = mounts.get(path) or mounts[str(Path(path).parent)]
    [volume] = [v for v in pod["volumes"] if v["name"] == name]
    assert isinstance(volume, dict)
    return volume


@pytest.mark.parametrize("folder", [K8S_SHARED, K8S_MIGRATE], ids=lambda p: p.name)
def test_k8s_overlay_resources_exist(folder):
    spec = kustomization(folder)
    assert spec["namespace"] == "imagegate"
    for entry in spec["resources"]:
        target = folder / entry
        assert target.is_file() or (target / "kustomization.yaml").is_file(), entry
    for patch in spec.get("patches", []):
        assert "path" not in patch or (folder / patch["path"]).is_file(), patch
    for generator in spec.get("configMapGenerator", []):
        assert all((folder / name).is_file() for name in generator["files"])
    names = {(d["kind"], d["metadata"]["name"]) for d in k8s_docs().values()}
    for patch in patches(folder):  # every patch targets a manifest of the base
        assert (patch["kind"], patch["metadata"]["name"]) in names, patch["metadata"]


def test_k8s_shared_leaves_out_the_embedded_volume_and_config():
    deleted = {p["kind"]: p["metadata"]["name"] for p in patches(K8S_SHARED) if "$patch" in p}
    docs = k8s_docs()
    assert deleted == {
        "PersistentVolumeClaim": docs["PersistentVolumeClaim"]["metadata"]["name"],
        "ConfigMap": docs["ConfigMap"]["metadata"]["name"],
    }


def test_k8s_shared_deployment_rolls_and_keeps_nothing_on_disk():
    spec = patch_of(K8S_SHARED, "Deployment")["spec"]
    assert "replicas" in spec and spec["replicas"] is None  # removed: the HPA owns the count
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod, main = spec["template"]["spec"], shared_container()
    assert main["name"] == container()["name"]  # merged into the base's container
    command = main["command"]
    assert command[:3] == ["imagegate", "serve", "--config"]
    assert command[command.index("--port") + 1] == str(container()["ports"][0]["containerPort"])
    config_path = command[command.index("--config") + 1]
    # the base's mount at that directory, now fed by the generated ConfigMap of config.toml
    volume = mounted_from(pod_spec(), container(), config_path)
    [patched] = [v for v in pod["volumes"] if v["name"] == volume["name"]]
    [generator] = kustomization(K8S_SHARED)["configMapGenerator"]
    assert patched["configMap"]["name"] == generator["name"]
    assert Path(config_path).name in generator["files"]
    data = {v["name"]: v for v in pod["volumes"]}["data"]
    assert data["persistentVolumeClaim"] is None and "emptyDir" in data


def test_k8s_shared_hpa_really_scales_the_deployment():
    hpa = patch_of(K8S_SHARED, "HorizontalPodAutoscaler")["spec"]
    assert hpa["minReplicas"] >= 2 and hpa["maxReplicas"] > hpa["minReplicas"]
    base = k8s_docs()["HorizontalPodAutoscaler"]["spec"]
    assert base["scaleTargetRef"]["name"] == k8s_docs()["Deployment"]["metadata"]["name"]
    [metric] = base["metrics"]  # Utilization is a share of the container's CPU request
    assert metric["resource"]["name"] == "cpu" and "cpu" in container()["resources"]["requests"]
    pdb = k8s_docs()["PodDisruptionBudget"]["spec"]
    assert pdb["maxUnavailable"] < hpa["minReplicas"]  # a drain leaves a replica serving


def test_k8s_shared_secret_example_holds_the_keys_the_pods_read():
    secret = load_yaml(K8S_SHARED / "secret.example.yaml")
    assert secret["kind"] == "Secret" and "data" not in secret
    values = secret["stringData"]
    assert all(v.startswith("<") and v.endswith(">") for v in values.values())
    name = secret["metadata"]["name"]
    assert name != load_yaml(K8S / "secret.example.yaml")["metadata"]["name"]
    base_refs = {**secret_refs(container())}
    for main in (shared_container(), migrate_job()["spec"]["template"]["spec"]["containers"][0]):
        refs = {k: r for k, r in secret_refs(main).items() if r["name"] == name}
        assert {r["key"] for r in refs.values()} == set(values)
        base_refs.update(refs)
    # every variable the shared config reads reaches the replicas; required ones are not optional
    for variable, required in config_variables((K8S_SHARED / "config.toml").read_text()).items():
        assert variable in base_refs, variable
        assert not required or "optional" not in base_refs[variable], variable


def test_k8s_migrate_job_runs_the_gateway_image_from_the_embedded_to_the_shared_config():
    job = migrate_job()
    pod = job["spec"]["template"]["spec"]
    [main] = pod["containers"]
    assert main["image"] == container()["image"]
    assert kustomization(K8S_MIGRATE)["images"] == kustomization(K8S)["images"]
    command = main["command"]
    assert command[:2] == ["imagegate", "migrate"]
    source, target = command[command.index("--from") + 1], command[command.index("--to") + 1]
    docs = k8s_docs()
    embedded = mounted_from(pod, main, source)["configMap"]["name"]
    assert embedded == docs["ConfigMap"]["metadata"]["name"]
    [generator] = kustomization(K8S_SHARED)["configMapGenerator"]
    assert mounted_from(pod, main, target)["configMap"]["name"] == generator["name"]
    # the embedded config's data_dir is the embedded PVC
    data_dir = tomllib.loads(docs["ConfigMap"]["data"]["config.toml"])["storage"]["data_dir"]
    claim = mounted_from(pod, main, data_dir)["persistentVolumeClaim"]["claimName"]
    assert claim == docs["PersistentVolumeClaim"]["metadata"]["name"]
    # both configs read their credentials from the environment: the Job gets every one
    read = config_variables((K8S_SHARED / "config.toml").read_text())
    read |= config_variables(docs["ConfigMap"]["data"]["config.toml"])
    assert set(read) <= set(secret_refs(main))
    assert pod["securityContext"]["runAsUser"] == image_uid()
    assert pod["restartPolicy"] == "OnFailure"
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert not docs["Service"]["spec"]["selector"].items() <= labels.items()  # no traffic


def test_k8s_migrate_holds_the_replicas_at_zero():
    """An HPA does not scale a Deployment at 0: nothing serves from half-copied stores."""
    assert patch_of(K8S_MIGRATE, "Deployment")["spec"] == {"replicas": 0}
    assert kustomization(K8S_MIGRATE)["resources"] == ["../k8s-shared", "job.yaml"]


def kustomize_build(folder: Path) -> dict[str, dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH")
    built = {}
    for doc in yaml.safe_load_all(run([kubectl, "kustomize", str(folder)])):
        built[doc["kind"]] = doc
    return built


def test_k8s_shared_builds_into_replicas_without_a_volume():
    built = kustomize_build(K8S_SHARED)
    assert set(built) == set(k8s_docs()) - {"PersistentVolumeClaim"}
    deployment = built["Deployment"]["spec"]
    assert "replicas" not in deployment and deployment["strategy"]["type"] == "RollingUpdate"
    pod = deployment["template"]["spec"]
    assert not any("persistentVolumeClaim" in v for v in pod["volumes"])
    [main] = pod["containers"]
    readiness, liveness = main["readinessProbe"]["httpGet"], main["livenessProbe"]["httpGet"]
    [port] = main["ports"]
    assert (readiness["path"], readiness["port"]) == ("/readyz", port["name"])
    assert (liveness["path"], liveness["port"]) == ("/healthz", port["name"])
    assert built["Service"]["spec"]["ports"][0]["targetPort"] == port["name"]
    config_path = main["command"][main["command"].index("--config") + 1]
    volume = mounted_from(pod, main, config_path)
    configmap = built["ConfigMap"]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]  # the hashed name
    text = (K8S_SHARED / "config.toml").read_text(encoding="utf-8")
    assert configmap["data"][Path(config_path).name] == text
    hpa = built["HorizontalPodAutoscaler"]["spec"]
    assert hpa["minReplicas"] >= 2
    assert hpa["scaleTargetRef"]["name"] == built["Deployment"]["metadata"]["name"]
    assert all(
        doc["metadata"]["namespace"] == "imagegate" for k, doc in built.items() if k != "Namespace"
    )


def test_k8s_migrate_builds_into_the_job_beside_idle_replicas():
    built, shared = kustomize_build(K8S_MIGRATE), kustomize_build(K8S_SHARED)
    assert set(built) == set(shared) | {"Job"}
    assert built["Deployment"]["spec"]["replicas"] == 0
    pod = built["Job"]["spec"]["template"]["spec"]
    [main] = pod["containers"]
    assert (
        main["image"] == built["Deployment"]["spec"]["template"]["spec"]["containers"][0]["image"]
    )
    target = main["command"][main["command"].index("--to") + 1]
    # the same generated ConfigMap the replicas read (kustomize renamed the reference)
    assert (
        mounted_from(pod, main, target)["configMap"]["name"]
        == shared["ConfigMap"]["metadata"]["name"]
    )
