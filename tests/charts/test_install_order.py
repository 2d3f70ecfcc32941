"""`helm install prometheus charts/stunner-prometheus` on a fresh cluster, replayed offline.

The release is rendered by the real helm binary against the stand-in dependency, which has
kube-prometheus-stack 88.x's hooks (standin.py); install_order.py replays Helm's install order
over it. A hook that needs the `monitoring` namespace, or anything else, before the release
creates it fails here as it fails on a cluster (prometheus-community/helm-charts#2427).
test_real_dependency.py runs the same replay over the real archive when it is at hand.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.charts.conftest import Helm
from tests.charts.install_order import (
    Step,
    documents,
    hook_events,
    key_of,
    kind_ranks,
    plan,
    replay,
    template,
)
from tests.charts.manifests import PROMETHEUS

NAMESPACE = ("Namespace", "", "monitoring")
ADMISSION_ACCOUNT = ("ServiceAccount", "monitoring", "stunner-monitoring-admission")


def _phases(steps: list[Step]) -> dict[tuple[str, str, str], list[str]]:
    out: dict[tuple[str, str, str], list[str]] = {}
    for step in steps:
        out.setdefault(step.key, []).append(step.phase)
    return out


def test_spec_command_installs_on_a_fresh_cluster(built_prometheus_chart: Path, helm: Helm) -> None:
    """The spec's `helm install prometheus stunner-prometheus`: release namespace default."""
    steps = plan(helm, template(helm, built_prometheus_chart))
    phases = _phases(steps)
    # The replay has something to catch: the dependency's webhook hooks live in monitoring.
    assert phases[ADMISSION_ACCOUNT] == ["pre-install", "post-install"]
    assert phases[("Job", "monitoring", "stunner-monitoring-admission-create")] == ["pre-install"]
    assert phases[("Job", "monitoring", "stunner-monitoring-admission-patch")] == ["post-install"]
    assert replay(steps) == []
    # The chart creates the namespace as the first pre-install hook, before anything in it.
    assert phases[NAMESPACE] == ["pre-install"]
    first_hook = next(step for step in steps if step.phase == "pre-install")
    assert first_hook.key == NAMESPACE


def test_namespace_hook_is_kept_and_never_replaces_a_namespace(
    built_prometheus_chart: Path, helm: Helm
) -> None:
    (namespace,) = [
        obj for _, obj in template(helm, built_prometheus_chart) if key_of(obj) == NAMESPACE
    ]
    annotations = namespace["metadata"]["annotations"]
    assert hook_events(namespace) == {"pre-install", "pre-upgrade"}
    assert annotations["helm.sh/resource-policy"] == "keep"
    # Helm's default, stated: it deletes an object of that name before creating the hook, which
    # is safe only because the template renders the hook when a lookup finds no such namespace.
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation"
    source = (PROMETHEUS / "templates" / "namespace.yaml").read_text()
    assert '(not (lookup "v1" "Namespace" "" $namespace))' in source
    assert int(annotations["helm.sh/hook-weight"]) < 0


def test_the_old_ordinary_namespace_fails_the_replay(
    built_prometheus_chart: Path, helm: Helm
) -> None:
    """The replay catches issue 16's failure: the namespace as an ordinary resource."""
    rendered = []
    for source, obj in template(helm, built_prometheus_chart):
        if key_of(obj) == NAMESPACE:
            obj["metadata"].pop("annotations")
        rendered.append((source, obj))
    problems = replay(plan(helm, rendered))
    assert problems, "an ordinary namespace must fail the replay"
    assert problems[0].startswith(
        "pre-install ServiceAccount monitoring/stunner-monitoring-admission "
        "(stunner-prometheus/charts/kube-prometheus-stack/templates/"
        "admission-serviceaccount.yaml) needs Namespace monitoring, which the release creates "
        "only later: resources Namespace monitoring"
    )
    assert all("needs Namespace monitoring" in problem for problem in problems)


def test_without_the_namespace_the_spec_command_fails(
    built_prometheus_chart: Path, helm: Helm
) -> None:
    """createNamespace=false needs the namespace: `--namespace monitoring --create-namespace`."""
    args = ("--set", "createNamespace=false")
    steps = plan(helm, template(helm, built_prometheus_chart, *args))
    problems = replay(steps)
    assert problems and all(
        "which neither the release nor a fresh cluster has" in p for p in problems
    )
    in_monitoring = plan(helm, template(helm, built_prometheus_chart, *args, "-n", "monitoring"))
    assert replay(in_monitoring, release_namespace="monitoring") == []


def test_kind_order_comes_from_the_binary(helm: Helm) -> None:
    ranks = kind_ranks(helm, ["Job", "RoleBinding", "Namespace", "ServiceAccount", "Role", "Zeta"])
    assert sorted(ranks, key=ranks.__getitem__) == [
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Job",
        "Zeta",  # unknown kinds go last
    ]


def _hook(kind: str, name: str, events: str, **extra: object) -> tuple[str, dict[str, object]]:
    annotations = {"helm.sh/hook": events, **{f"helm.sh/{k}": v for k, v in extra.items()}}
    metadata = {"name": name, "namespace": "default", "annotations": annotations}
    return f"t/templates/{name}.yaml", {"apiVersion": "v1", "kind": kind, "metadata": metadata}


def _job(name: str, events: str, account: str, **extra: object) -> tuple[str, dict[str, object]]:
    source, job = _hook("Job", name, events, **extra)
    job["apiVersion"] = "batch/v1"
    job["spec"] = {"template": {"spec": {"serviceAccountName": account, "containers": []}}}
    return source, job


def test_replay_orders_hooks_by_weight_then_kind(helm: Helm) -> None:
    rendered = [
        _job("run", "pre-install", "sa"),
        _hook("ServiceAccount", "sa", "pre-install", **{"hook-weight": "1"}),
    ]
    (problem,) = replay(plan(helm, rendered))
    assert "pre-install Job default/run" in problem
    assert "needs ServiceAccount default/sa, which the release creates only later" in problem
    rendered[1] = _hook("ServiceAccount", "sa", "pre-install")  # same weight: kind order
    assert replay(plan(helm, rendered)) == []


def test_replay_knows_hook_succeeded_deletes_after_the_phase(helm: Helm) -> None:
    rendered = [
        _hook("ServiceAccount", "sa", "pre-install", **{"hook-delete-policy": "hook-succeeded"}),
        _job("patch", "post-install", "sa"),
    ]
    (problem,) = replay(plan(helm, rendered))
    assert problem.endswith("created and then deleted (hook-succeeded)")


def test_documents_keep_the_source(helm: Helm, tmp_path: Path) -> None:
    text = (
        "---\n# Source: c/templates/a.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n"
    )
    assert list(documents(text)) == [
        ("c/templates/a.yaml", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}})
    ]


@pytest.mark.parametrize("phase", ["pre-install", "post-install"])
def test_custom_resources_need_their_crd_first(helm: Helm, phase: str) -> None:
    source, obj = _hook("PodMonitor", "m", phase)
    obj["apiVersion"] = "monitoring.coreos.com/v1"
    (problem,) = replay(plan(helm, [(source, obj)]))
    assert "needs the CRD of monitoring.coreos.com/PodMonitor" in problem


def test_only_crds_directories_go_first(helm: Helm) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "things.example.com"},
        "spec": {"group": "example.com", "names": {"kind": "Thing"}},
    }
    rendered = [("c/charts/sub/crds/things.yaml", crd), ("c/templates/crds/things.yaml", crd)]
    assert [step.phase for step in plan(helm, rendered)] == ["crds", "resources"]
