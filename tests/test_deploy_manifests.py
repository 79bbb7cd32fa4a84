"""The Kubernetes manifests in deploy/: valid against the stated Kubernetes versions' schemas
(kubernetes-validate, strict), consistent with each other, with the image the Dockerfile builds,
with the service's settings and declared resources, and probing routes that answer."""
from __future__ import annotations

import copy
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from service.config import ENV_PREFIX, ServiceSettings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
MANIFESTS = ("deployment.yaml", "service.yaml", "hpa.yaml")
# the oldest and the newest Kubernetes minor release the manifests are stated for (docs/service.md)
KUBERNETES_VERSIONS = ("1.35.0", "1.37.0")


def _load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def _container() -> dict:
    return _load("deployment.yaml")["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_is_valid_for_the_stated_kubernetes_versions(name, version):
    kubernetes_validate.validate(_load(name), version, strict=True)


def test_the_validator_rejects_a_broken_deployment():
    bad = copy.deepcopy(_load("deployment.yaml"))
    bad["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSIONS[0], strict=True)
    bad = copy.deepcopy(_load("deployment.yaml"))
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {"path": "/readyz"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSIONS[0], strict=True)


def test_manifests_refer_to_each_other_and_kustomize_lists_them_all():
    deployment, service, hpa = (_load(n) for n in MANIFESTS)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    port_names = {p["name"] for p in _container()["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] <= deployment["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    kustomization = _load("kustomization.yaml")
    assert sorted(kustomization["resources"]) == sorted(MANIFESTS)
    assert sorted(p.name for p in DEPLOY.glob("*.yaml")) == sorted([*MANIFESTS, "kustomization.yaml"])


def test_deployment_matches_the_dockerfile_image():
    dockerfile = (ROOT / "Dockerfile").read_text()
    container = _container()
    image_tag = re.search(r"docker build -t (\S+) \.", dockerfile).group(1)
    assert container["image"].split(":")[0] == image_tag
    assert {i["name"] for i in _load("kustomization.yaml")["images"]} == {image_tag}
    exposed = int(re.search(r"^EXPOSE (\d+)$", dockerfile, re.M).group(1))
    assert [p["containerPort"] for p in container["ports"]] == [exposed]
    user = int(re.search(r"^USER (\d+)$", dockerfile, re.M).group(1))
    assert _load("deployment.yaml")["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == user


def test_deployment_settings_are_the_services_and_ask_for_what_it_declares():
    env = {e["name"]: e["value"] for e in _container()["env"]}
    knet = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    assert {k.removeprefix(ENV_PREFIX).lower() for k in knet} <= set(ServiceSettings.model_fields)
    settings = ServiceSettings.from_env(knet)  # every value parses (ValueError naming it otherwise)
    assert env["OMP_NUM_THREADS"] == str(settings.threads)
    from service.service import replica_resources
    assert _container()["resources"]["requests"] == replica_resources(settings)


@pytest.mark.http
def test_probes_answer_on_a_real_server(server):
    client, *_ = server
    container = _container()
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["port"] in {p["name"] for p in container["ports"]}
        assert client.get(get["path"]).status_code == 200, probe
