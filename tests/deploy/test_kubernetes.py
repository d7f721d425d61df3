"""deploy/k8s: the manifests kustomize lists, the Secret example, the Deployment's probes,
user and volumes, the selectors, scraping with the metrics key, and `kubectl kustomize`
where kubectl is installed."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.deploy_files import (
    DEPLOY,
    K8S,
    container,
    image_uid,
    k8s_docs,
    load_yaml,
    pod_spec,
    run,
    yaml,
)


def test_kustomization_lists_every_manifest_but_the_secret_example():
    listed = set(load_yaml(K8S / "kustomization.yaml")["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present - {"secret.example.yaml"}
    assert {"Namespace", "ConfigMap", "PersistentVolumeClaim", "Deployment", "Service"} <= set(
        k8s_docs()
    )
    assert {"PodDisruptionBudget", "HorizontalPodAutoscaler"} <= set(k8s_docs())
    assert "Secret" not in k8s_docs()
    for kind, doc in k8s_docs().items():
        if kind != "Namespace":
            assert doc["metadata"]["namespace"] == "imagegate", kind


def test_secret_example_holds_placeholders_and_the_keys_the_pod_reads():
    secret = load_yaml(K8S / "secret.example.yaml")
    assert secret["kind"] == "Secret" and "data" not in secret
    values = secret["stringData"]
    assert all(v.startswith("<") and v.endswith(">") for v in values.values())
    refs = [e["valueFrom"]["secretKeyRef"] for e in container()["env"] if "valueFrom" in e]
    assert {r["name"] for r in refs} == {secret["metadata"]["name"]}
    assert {r["key"] for r in refs} == set(values)


def test_deployment_probes_health_and_readiness():
    main = container()
    [port] = main["ports"]
    assert port["containerPort"] == 8080
    readiness, liveness = main["readinessProbe"]["httpGet"], main["livenessProbe"]["httpGet"]
    assert (readiness["path"], readiness["port"]) == ("/readyz", port["name"])
    assert (liveness["path"], liveness["port"]) == ("/healthz", port["name"])


def test_deployment_runs_non_root_with_a_read_only_root():
    pod, main = pod_spec(), container()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == image_uid()
    assert pod["securityContext"]["fsGroup"] == image_uid()  # the data volume is writable
    context = main["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= set(main["resources"]["requests"])
    assert "memory" in main["resources"]["limits"]


def test_deployment_is_one_replica_with_its_volumes_wired():
    docs = k8s_docs()
    spec = docs["Deployment"]["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container()["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in container()["env"]}
    data = volumes[mounts[env["IMAGEGATE_DATA_DIR"]]]
    assert (
        data["persistentVolumeClaim"]["claimName"]
        == docs["PersistentVolumeClaim"]["metadata"]["name"]
    )
    config = volumes[mounts[str(Path(env["IMAGEGATE_CONFIG"]).parent)]]
    assert config["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    assert "config.toml" in docs["ConfigMap"]["data"]


def test_service_pdb_and_hpa_select_the_deployment():
    docs = k8s_docs()
    labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert docs["Deployment"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert docs["Service"]["spec"]["selector"].items() <= labels.items()
    assert docs["Service"]["spec"]["ports"][0]["targetPort"] == container()["ports"][0]["name"]
    assert docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = docs["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == docs["Deployment"]["metadata"]["name"]
    assert hpa["minReplicas"] == hpa["maxReplicas"] == 1  # embedded stores: single node


def readme_yaml() -> list[dict[str, Any]]:
    blocks = re.findall(r"```yaml\n(.*?)```", (DEPLOY / "README.md").read_text(), re.S)
    return [yaml.safe_load(re.sub(r"(?m)^ {3}", "", block)) for block in blocks]


def test_k8s_scraping_sends_the_metrics_key():
    """prometheus.io/* annotations feed a job that sends no token, and /metrics takes the
    metrics key: the pods carry none, and the README's scrape job and ServiceMonitor send it."""
    template = k8s_docs()["Deployment"]["spec"]["template"]["metadata"]
    assert not any(k.startswith("prometheus.io/") for k in template.get("annotations", {}))
    [job] = [
        job
        for doc in readme_yaml()
        for job in doc.get("scrape_configs", [])
        if "kubernetes_sd_configs" in job
    ]
    assert job["job_name"] == "imagegate"  # ImagegateDown watches it
    assert job["authorization"]["type"] == "Bearer" and job["authorization"]["credentials_file"]
    [monitor] = [doc for doc in readme_yaml() if doc.get("kind") == "ServiceMonitor"]
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == k8s_docs()["Service"]["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"
    secret = load_yaml(K8S / "secret.example.yaml")
    credentials = endpoint["authorization"]["credentials"]
    assert credentials == {"name": secret["metadata"]["name"], "key": "IMAGEGATE_METRICS_KEY"}
    assert "IMAGEGATE_METRICS_KEY" in secret["stringData"]
    assert monitor["metadata"]["namespace"] == k8s_docs()["Service"]["metadata"]["namespace"]
    labels = monitor["spec"]["selector"]["matchLabels"]
    assert labels.items() <= k8s_docs()["Service"]["metadata"]["labels"].items()


def test_kustomize_builds():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH")
    built = list(yaml.safe_load_all(run([kubectl, "kustomize", str(K8S)])))
    assert {doc["kind"] for doc in built} == set(k8s_docs())
