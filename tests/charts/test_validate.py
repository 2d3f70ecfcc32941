"""Every rendered object is valid: built-in kinds for the oldest and newest supported Kubernetes,
custom resources against their CRD schemas."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jsonschema
import pytest
import yaml

from tests.charts.manifests import (
    STUNNER,
    Manifest,
    monitoring_values,
    render_prometheus,
    render_stunner,
)

pytest.importorskip("helm_python")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

# Chart.yaml says kubeVersion >=1.25.0-0; kubernetes-validate knows up to this one.
KUBERNETES_VERSIONS = ("1.25.0", "1.37.0")
CUSTOM_GROUPS = ("stunner.l7mp.io/", "gateway.networking.k8s.io/", "monitoring.coreos.com/")

EVERYTHING_ON: dict[str, Any] = {
    **monitoring_values(
        enabled=True,
        podMonitor={"enabled": True, "labels": {"release": "kps"}},
        grafanaDashboard={"enabled": True},
        prometheusRule={"enabled": True},
    ),
}
EVERYTHING_ON["stunner"].update(
    {
        "gateway": {"create": True},
        "listeners": [
            {"name": "udp-listener", "protocol": "UDP", "port": 3478},
            {"name": "tcp-listener", "protocol": "TCP", "port": 3478},
            {
                "name": "tls-listener",
                "protocol": "TLS",
                "port": 3479,
                "tls": {"mode": "Terminate", "certificateRefs": [{"name": "stunner-tls"}]},
            },
        ],
        "service": {"type": "NodePort", "externalTrafficPolicy": "Local"},
        "gatewayConfig": {
            "metricsEndpoint": "http://:8080/metrics",
            "userName": "u",
            "password": "p",
        },
    }
)
LONGTERM = {"stunner": {"gatewayConfig": {"authType": "longterm", "sharedSecret": "s"}}}

RENDERINGS: dict[str, Callable[[], list[Manifest]]] = {
    "stunner-default": lambda: render_stunner(),
    "stunner-everything": lambda: render_stunner(EVERYTHING_ON),
    "stunner-longterm-no-operator": lambda: render_stunner(
        {**LONGTERM, "operator": {"enabled": False}}
    ),
    "prometheus-default": lambda: render_prometheus(),
    "prometheus-custom": lambda: render_prometheus(
        {
            "podMonitor": {"interval": "1s", "namespaces": []},
            "prometheusService": {"type": "NodePort"},
        }
    ),
}


def _custom(manifest: Manifest) -> bool:
    return str(manifest["apiVersion"]).startswith(CUSTOM_GROUPS)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("rendering", sorted(RENDERINGS))
def test_builtin_kinds_validate_strictly(rendering: str, version: str) -> None:
    builtin = [m for m in RENDERINGS[rendering]() if not _custom(m)]
    assert builtin
    for manifest in builtin:
        kubernetes_validate.validate(manifest, version, strict=True)


def test_strict_validation_can_fail() -> None:
    service = next(m for m in render_stunner() if m["kind"] == "Service")
    service["spec"]["ports"][0]["targetPrt"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, KUBERNETES_VERSIONS[0], strict=True)


def _gatewayconfig_schema() -> dict[str, Any]:
    (path,) = sorted((STUNNER / "crds").glob("*.yaml"))
    crd = yaml.safe_load(path.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return dict(version["schema"]["openAPIV3Schema"])


@pytest.mark.parametrize("rendering", [r for r in sorted(RENDERINGS) if r.startswith("stunner")])
def test_gatewayconfig_matches_its_crd(rendering: str) -> None:
    if not list((STUNNER / "crds").glob("*.yaml")):
        pytest.skip("charts/stunner/crds/ is not there yet")
    configs = [m for m in RENDERINGS[rendering]() if m["kind"] == "GatewayConfig"]
    assert len(configs) == 1
    jsonschema.Draft7Validator(_gatewayconfig_schema()).validate(configs[0])


def test_values_schema_uses_the_crds_credential_rules() -> None:
    """A value the CRD would reject is refused at helm install, not when the CR is applied."""
    if not list((STUNNER / "crds").glob("*.yaml")):
        pytest.skip("charts/stunner/crds/ is not there yet")
    crd = _gatewayconfig_schema()["properties"]["spec"]["properties"]
    import json

    values = json.loads((STUNNER / "values.schema.json").read_text())
    ours = values["properties"]["stunner"]["properties"]["gatewayConfig"]["properties"]
    for field in ("userName", "password", "realm", "metricsEndpoint"):
        assert ours[field]["pattern"] == crd[field]["pattern"], field
    assert crd["authType"]["pattern"] == "^(" + "|".join(ours["authType"]["enum"]) + ")$"


# A STAND-IN for the Gateway API CRD schemas, which are not available offline: only the fields
# the chart sets, with the upstream v1 types and patterns for them.
def _fields(required: list[str], **properties: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": required,
        "properties": properties,
    }


def _text(pattern: str | None = None, low: int = 0, high: int = 253) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "minLength": low, "maxLength": high}
    return {**schema, "pattern": pattern} if pattern else schema


_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_LISTENER = _fields(
    ["name", "port", "protocol"],
    name=_text(_SUBDOMAIN + "$", 1),
    port={"type": "integer", "minimum": 1, "maximum": 65535},
    protocol=_text(r"^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$", 1),
    tls={"type": "object"},
)
GATEWAY_API_STANDIN = {
    "GatewayClass": {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "spec": _fields(
                ["controllerName"],
                controllerName=_text(_SUBDOMAIN + r"\/[A-Za-z0-9\/\-._~%!$&'()*+,;=:]+$", 1),
                description=_text(high=64),
                parametersRef=_fields(
                    ["group", "kind", "name"],
                    group=_text(),
                    kind=_text(low=1, high=63),
                    name=_text(low=1),
                    namespace=_text(low=1, high=63),
                ),
            )
        },
    },
    "Gateway": {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "spec": _fields(
                ["gatewayClassName", "listeners"],
                gatewayClassName=_text(low=1),
                listeners={"type": "array", "minItems": 1, "maxItems": 64, "items": _LISTENER},
            )
        },
    },
}


def test_gateway_api_objects_match_the_standin_schemas() -> None:
    manifests = RENDERINGS["stunner-everything"]()
    checked = 0
    for manifest in manifests:
        if manifest["apiVersion"] == "gateway.networking.k8s.io/v1":
            jsonschema.validate(manifest, GATEWAY_API_STANDIN[manifest["kind"]])
            checked += 1
    assert checked == 2


def _prometheus_operator_model(kind: str) -> Any:
    models = pytest.importorskip(
        "cloudcoil.models.prometheus_operator.v1",
        reason="cloudcoil-models-prometheus-operator validates PodMonitor and PrometheusRule",
    )
    return getattr(models, kind)


def _validate_strictly(kind: str, manifest: Manifest) -> None:
    """The CRD's types and patterns, and no field the model does not know (pydantic drops them)."""
    model = _prometheus_operator_model(kind).model_validate(manifest)
    assert model.model_dump(by_alias=True, exclude_unset=True, mode="json") == manifest


@pytest.mark.parametrize(
    "rendering", ["stunner-everything", "prometheus-default", "prometheus-custom"]
)
def test_podmonitor_and_prometheusrule_match_the_operator_crds(rendering: str) -> None:
    checked = []
    for manifest in RENDERINGS[rendering]():
        if manifest["kind"] in ("PodMonitor", "PrometheusRule"):
            _validate_strictly(manifest["kind"], manifest)
            checked.append(manifest["kind"])
    assert sorted(checked) == ["PodMonitor", "PrometheusRule"]


def test_operator_crd_validation_can_fail() -> None:
    monitor = next(m for m in render_prometheus() if m["kind"] == "PodMonitor")
    monitor["spec"]["podMetricsEndpoints"][0]["interval"] = "5 s"
    with pytest.raises(ValueError, match="interval"):
        _validate_strictly("PodMonitor", monitor)
    monitor["spec"]["podMetricsEndpoints"][0] = {"port": "metrics", "intervall": "5s"}
    with pytest.raises(AssertionError):
        _validate_strictly("PodMonitor", monitor)
