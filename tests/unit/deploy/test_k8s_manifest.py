"""docs/k8s/tf-serving-sync.yaml (docs/deploy.md's Kubernetes example) parses and is what it claims:
TF Serving + the sync sidecar sharing one volume, probes, configuration and secrets by reference."""
from __future__ import annotations

import os

import pytest
import yaml

from tests.conftest import ROOT

MANIFEST = os.path.join(ROOT, "docs", "k8s", "tf-serving-sync.yaml")


@pytest.fixture(scope="module")
def docs():
    with open(MANIFEST) as fh:
        out = [d for d in yaml.safe_load_all(fh) if d]
    by_kind = {d["kind"]: d for d in out if d["kind"] != "Service"}
    by_kind["Service"] = next(d for d in out if d["kind"] == "Service" and d["metadata"]["name"] == "tf-serving")
    by_kind["_headless"] = next(d for d in out if d["kind"] == "Service" and d["spec"].get("clusterIP") == "None")
    return by_kind


def test_kinds(docs):
    assert set(docs) == {"ConfigMap", "StatefulSet", "Service", "_headless"}
    for d in docs.values():
        assert d["apiVersion"] in ("v1", "apps/v1") and d["metadata"]["name"]


def test_every_replica_has_a_stable_name_for_rollout_confirmation(docs):
    sts, headless = docs["StatefulSet"]["spec"], docs["_headless"]
    assert sts["serviceName"] == headless["metadata"]["name"] and sts["replicas"] >= 2
    assert headless["spec"]["selector"] == sts["selector"]["matchLabels"]
    assert {p["port"] for p in headless["spec"]["ports"]} == {8500, 8501}


def test_serving_and_sidecar_share_the_model_volume(docs):
    spec = docs["StatefulSet"]["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in spec["containers"]}
    assert set(containers) == {"tf-serving", "model-sync"}
    serving, sync = containers["tf-serving"], containers["model-sync"]
    assert serving["image"].startswith("tensorflow/serving:")
    assert sync["args"][0] == "sync-all" and "--root" in sync["args"] and "--once" not in sync["args"]
    # one TF Serving for every model: the model config file the sidecar writes, restart-safe labels
    assert "--model_config_file=/models/models.config" in serving["args"]
    assert "--allow_version_labels_for_unavailable_models=true" in serving["args"]
    assert sync["args"][sync["args"].index("--serving-url") + 1] == "http://localhost:8501"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes["models"] or "persistentVolumeClaim" in volumes["models"]
    mounts = {c: {m["name"]: m for m in containers[c]["volumeMounts"]} for c in containers}
    assert mounts["tf-serving"]["models"]["mountPath"] == mounts["model-sync"]["models"]["mountPath"] == "/models"
    assert mounts["tf-serving"]["models"].get("readOnly") is True
    assert not mounts["model-sync"]["models"].get("readOnly")
    env = {e["name"]: e for e in serving["env"]}
    assert env["MODEL_BASE_PATH"]["value"] == "/models"
    assert sync["args"][sync["args"].index("--root") + 1] == "/models"
    # an init container syncs once (and writes the model config file) so a new pod starts serving at once
    init = spec["initContainers"][0]
    assert init["args"][0] == "sync-all" and "--once" in init["args"]
    assert {m["name"] for m in init["volumeMounts"]} >= {"models"}


def test_probes_and_ports(docs):
    spec = docs["StatefulSet"]["spec"]["template"]["spec"]
    serving = next(c for c in spec["containers"] if c["name"] == "tf-serving")
    ports = {p["name"]: p["containerPort"] for p in serving["ports"]}
    assert ports == {"grpc": 8500, "http": 8501}
    model = docs["ConfigMap"]["data"]["MODEL_NAME"]
    assert serving["readinessProbe"]["httpGet"]["path"] == f"/v1/models/{model}"
    assert serving["livenessProbe"] and serving["startupProbe"]
    sync = next(c for c in spec["containers"] if c["name"] == "model-sync")
    assert sync["livenessProbe"]["exec"]["command"][0] == "tfs-release"
    # the sync's own health file (probes get no $(VAR) expansion: a literal path both sides)
    probe = sync["livenessProbe"]["exec"]["command"]
    assert probe[1] == "sync-health" and "readinessProbe" not in sync
    assert probe[probe.index("--health-file") + 1] == sync["args"][sync["args"].index("--health-file") + 1]
    svc = docs["Service"]["spec"]
    assert svc["selector"] == docs["StatefulSet"]["spec"]["selector"]["matchLabels"]
    assert {p["targetPort"] for p in svc["ports"]} == {"grpc", "http"}


def test_config_and_secret_by_reference(docs):
    spec = docs["StatefulSet"]["spec"]["template"]["spec"]
    cm = docs["ConfigMap"]["data"]
    models = yaml.safe_load(cm["models.yaml"])["models"]
    assert cm["MODEL_NAME"] in models and models[cm["MODEL_NAME"]]["serving"].startswith("s3://")
    for c in [*spec["containers"], *spec["initContainers"]]:
        if c["name"] == "tf-serving":
            continue
        refs = c["envFrom"]
        assert {"configMapRef": {"name": docs["ConfigMap"]["metadata"]["name"]}} in refs
        assert any("secretRef" in r for r in refs), f"{c['name']}: S3 keys must come from a Secret"
        # the sidecar's own read-only identity, not the pipeline's keys
        assert [r["secretRef"]["name"] for r in refs if "secretRef" in r] == ["tfs-release-sync-s3"], refs
    text = open(MANIFEST).read()
    assert "AWS_SECRET_ACCESS_KEY:" not in text and "AWS_ACCESS_KEY_ID:" not in text
