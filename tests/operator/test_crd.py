"""The GatewayConfig CRD: a valid Kubernetes object, its schema accepts the spec's examples
and rejects bad specs, and it agrees with the operator's own checks (stunner/operator/spec.py)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from stunner.operator import spec as gc_spec
from stunner.operator.spec import SpecError, parse_spec

from .fake_api import merge_patch

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "charts/stunner/crds/stunner.l7mp.io_gatewayconfigs.yaml"
K8S_VERSION = "1.30.0"

# MONITORING.md, verbatim.
SPEC_EXAMPLE = yaml.safe_load(
    """
apiVersion: stunner.l7mp.io/v1alpha1
kind: GatewayConfig
metadata:
  name: stunner-gatewayconfig
  namespace: stunner
spec:
  userName: "my-user"
  password: "my-password"
  metricsEndpoint: "http://:8080/metrics"
"""
)
# kubectl -n stunner patch gatewayconfigs.stunner.l7mp.io stunner-gatewayconfig --type=merge
SPEC_PATCH = {"spec": {"metricsEndpoint": "http://0.0.0.0:8080/metrics"}}


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return dict(yaml.safe_load(CRD_PATH.read_text()))


@pytest.fixture(scope="module")
def validator(crd: dict[str, Any]) -> jsonschema.Draft7Validator:
    (version,) = crd["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def props(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    return dict(version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"])


def test_crd_is_a_valid_kubernetes_object(crd: dict[str, Any]) -> None:
    kubernetes_validate.validate(crd, K8S_VERSION, strict=True)
    assert crd["metadata"]["name"] == "gatewayconfigs.stunner.l7mp.io"
    (version,) = crd["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    # kopf keeps its handler state under status.kopf: the schema must not prune it.
    assert version["schema"]["openAPIV3Schema"]["properties"]["status"][
        "x-kubernetes-preserve-unknown-fields"
    ]


def test_crd_has_upstreams_fields(crd: dict[str, Any]) -> None:
    assert set(props(crd)) == {
        "stunnerConfig",
        "realm",
        "authType",
        "userName",
        "password",
        "sharedSecret",
        "authLifetime",
        "authRef",
        "loadBalancerServiceAnnotations",
        "metricsEndpoint",
        "healthCheckEndpoint",
        "logLevel",
        "minPort",
        "maxPort",
    }


def test_patterns_and_defaults_agree_with_the_operator(crd: dict[str, Any]) -> None:
    p = props(crd)
    patterns = {k: v["pattern"] for k, v in p.items() if "pattern" in v}
    assert patterns == dict(gc_spec._PATTERNS)
    defaults = {k: v["default"] for k, v in p.items() if "default" in v}
    assert defaults == dict(gc_spec.DEFAULTS)
    assert p["stunnerConfig"]["maxLength"] == gc_spec.STUNNER_CONFIG_MAX_LENGTH
    for port in ("minPort", "maxPort"):
        assert (p[port]["minimum"], p[port]["maximum"]) == (1, 65535)


def test_spec_example_and_patched_example_validate(validator: jsonschema.Draft7Validator) -> None:
    patched = merge_patch(SPEC_EXAMPLE, SPEC_PATCH)
    assert patched["spec"] == {
        "userName": "my-user",
        "password": "my-password",
        "metricsEndpoint": "http://0.0.0.0:8080/metrics",
    }
    for obj in (SPEC_EXAMPLE, patched):
        validator.validate(obj)
        parse_spec(obj)


GOOD = [
    {"authType": "longterm", "sharedSecret": "s", "userName": None, "password": None},
    {"realm": "example.com", "logLevel": "all:DEBUG", "minPort": 1, "maxPort": 65535},
    {"metricsEndpoint": "", "healthCheckEndpoint": ""},
    {"authRef": {"name": "creds", "namespace": "other"}},
    {"userName": "a!#$%&'*+-.^_`|~z", "stunnerConfig": "x" * 64},
]

BAD = [
    {"realm": "Upper.Case"},
    {"realm": "-leading-dash"},
    {"authType": "plaintext-foo"},
    {"authType": "foo-longterm"},
    {"authType": "ephemeral"},
    {"userName": "has space"},
    {"password": "tab\there"},
    {"minPort": 0},
    {"maxPort": 70000},
    {"minPort": "3478"},
    {"metricsEndpoint": "https://:8080/metrics"},
    {"healthCheckEndpoint": ":8086"},
    {"stunnerConfig": "x" * 65},
    {"stunnerConfig": "under_score"},
    {"authRef": {"namespace": "no-name"}},
]


def example(**spec: Any) -> dict[str, Any]:
    obj = copy.deepcopy(SPEC_EXAMPLE)
    obj["spec"].update(spec)
    obj["spec"] = {k: v for k, v in obj["spec"].items() if v is not None}
    return obj


@pytest.mark.parametrize("spec", GOOD, ids=[str(s) for s in GOOD])
def test_good_specs_pass_both(validator: jsonschema.Draft7Validator, spec: dict[str, Any]) -> None:
    obj = example(**spec)
    validator.validate(obj)
    parse_spec(obj)


@pytest.mark.parametrize("spec", BAD, ids=[str(s) for s in BAD])
def test_bad_specs_fail_both(validator: jsonschema.Draft7Validator, spec: dict[str, Any]) -> None:
    """The API server and, for objects that slipped past it, the operator say no."""
    obj = example(**spec)
    assert list(validator.iter_errors(obj)), f"CRD accepted {spec}"
    with pytest.raises(SpecError):
        parse_spec(obj)


@pytest.mark.parametrize(
    "spec",
    [{"userName": None}, {"minPort": 4000, "maxPort": 3000}, {"logLevel": "all:LOUD"}],
)
def test_rules_only_the_operator_can_check(
    validator: jsonschema.Draft7Validator, spec: dict[str, Any]
) -> None:
    obj = example(**spec)
    validator.validate(obj)  # a schema cannot say this ...
    with pytest.raises(SpecError):  # ... so the operator reports it in the status
        parse_spec(obj)
