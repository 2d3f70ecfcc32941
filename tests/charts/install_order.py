"""Helm's install order, replayed over a rendered release on a model of a fresh cluster.

`helm install` does not create a release at once. It creates, in this order:

1. the CRDs in every chart's `crds/` directory (subcharts included);
2. the `pre-install` hooks, one at a time, sorted by `helm.sh/hook-weight`, then by kind (Helm's
   install order of kinds), then by name; a Job hook must complete before the next hook starts,
   and hooks with `hook-succeeded` are deleted once the whole phase has succeeded;
3. the ordinary resources, sorted by kind;
4. the `post-install` hooks, as in 2.

An object fails to be created when its namespace does not exist yet, or when it is a custom
resource whose CRD does not exist yet. A hook fails when it needs an object (its ServiceAccount,
a ConfigMap or Secret it mounts, the Role a binding grants) that the release creates only in a
later step. `replay` reports each of these as one line; an empty list means the install order
works. The input is the output of the real `helm template --include-crds`: it prints the
ordinary resources in Helm's own install order, and `kind_ranks` asks the same binary how it
orders the kinds the hooks use.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

Manifest = dict[str, Any]
Key = tuple[str, str, str]  # kind, namespace ("" if cluster-scoped), name

# What exists on a fresh cluster before `helm install` (without --create-namespace).
FRESH_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
# API groups served without a CRD.
BUILTIN_GROUPS = frozenset(
    {
        "",
        "apps",
        "batch",
        "autoscaling",
        "policy",
        "rbac.authorization.k8s.io",
        "networking.k8s.io",
        "admissionregistration.k8s.io",
        "apiextensions.k8s.io",
        "apiregistration.k8s.io",
        "storage.k8s.io",
        "scheduling.k8s.io",
        "coordination.k8s.io",
        "discovery.k8s.io",
        "certificates.k8s.io",
        "node.k8s.io",
        "events.k8s.io",
        "flowcontrol.apiserver.k8s.io",
    }
)
POD_TEMPLATE_KINDS = frozenset(
    {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}
)
HOOK = "helm.sh/hook"
PHASES = ("crds", "pre-install", "resources", "post-install")


class HelmRunner(Protocol):
    def run(self, *args: str, check: bool = True) -> Any: ...


@dataclass(frozen=True)
class Step:
    """One object created by `helm install`, in the phase that creates it."""

    phase: str
    obj: Manifest
    source: str

    @property
    def key(self) -> Key:
        return key_of(self.obj)

    def describe(self) -> str:
        kind, namespace, name = self.key
        where = f"{namespace}/{name}" if namespace else name
        return f"{self.phase} {kind} {where} ({self.source})"


def key_of(obj: Manifest) -> Key:
    metadata = obj.get("metadata") or {}
    return str(obj["kind"]), str(metadata.get("namespace") or ""), str(metadata["name"])


class CrdLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """PyYAML reads a bare `=` (it appears in CRD enums) as YAML 1.1's value tag: keep it text."""


CrdLoader.add_constructor("tag:yaml.org,2002:value", CrdLoader.construct_yaml_str)


def documents(text: str) -> Iterator[tuple[str, Manifest]]:
    """(source path, object) for every object `helm template` printed."""
    for chunk in re.split(r"^---\s*$", text, flags=re.MULTILINE):
        found = re.search(r"^# Source: (.+)$", chunk, flags=re.MULTILINE)
        obj = yaml.load(chunk, Loader=CrdLoader)
        if isinstance(obj, dict) and obj.get("kind"):
            yield (found.group(1).strip() if found else "?"), obj


def hook_events(obj: Manifest) -> set[str]:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return {event.strip() for event in str(annotations.get(HOOK, "")).split(",") if event.strip()}


def _annotation(obj: Manifest, name: str, default: str = "") -> str:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(name, default))


def kind_ranks(helm: HelmRunner, kinds: Iterable[str]) -> dict[str, int]:
    """The position of each kind in the real Helm's install order, asked of the binary itself:
    a probe chart with one object per kind, rendered by `helm template`."""
    wanted = sorted(set(kinds))
    with tempfile.TemporaryDirectory(prefix="kind-order-") as tmp:
        chart = Path(tmp) / "probe"
        (chart / "templates").mkdir(parents=True)
        (chart / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.0.1\n")
        probes = "".join(
            f"---\napiVersion: probe.invalid/v1\nkind: {kind}\nmetadata:\n  name: p\n"
            for kind in wanted
        )
        (chart / "templates" / "all.yaml").write_text(probes)
        printed = helm.run("template", "probe", str(chart)).stdout
    order = [obj["kind"] for _, obj in documents(printed)]
    assert sorted(order) == wanted, f"the probe lost kinds: {order}"
    return {kind: position for position, kind in enumerate(order)}


def template(helm: HelmRunner, chart: Path, *args: str) -> list[tuple[str, Manifest]]:
    """`helm template prometheus CHART --include-crds ARGS`, as (source, object) pairs."""
    printed = helm.run("template", "prometheus", str(chart), "--include-crds", *args).stdout
    return list(documents(printed))


def _in_crds_directory(source: str) -> bool:
    """A file of a chart's crds/ directory, which Helm installs first; not a template."""
    parts = Path(source).parts
    return len(parts) >= 2 and parts[-2] == "crds" and "templates" not in parts


def plan(helm: HelmRunner, rendered: Iterable[tuple[str, Manifest]]) -> list[Step]:
    """The steps of `helm install`, from `helm template --include-crds` output in its order."""
    crds: list[Step] = []
    ordinary: list[Step] = []
    hooks: dict[str, list[Step]] = {"pre-install": [], "post-install": []}
    for source, obj in rendered:
        events = hook_events(obj)
        if obj["kind"] == "CustomResourceDefinition" and _in_crds_directory(source):
            crds.append(Step("crds", obj, source))
        elif not events:
            ordinary.append(Step("resources", obj, source))
        else:
            for phase, steps in hooks.items():
                if phase in events:
                    steps.append(Step(phase, obj, source))
    hook_kinds = [step.obj["kind"] for steps in hooks.values() for step in steps]
    ranks = kind_ranks(helm, hook_kinds) if hook_kinds else {}

    def by_weight(step: Step) -> tuple[int, int, str]:
        weight = int(_annotation(step.obj, "helm.sh/hook-weight", "0"))
        return weight, ranks[step.obj["kind"]], step.key[2]

    return [
        *crds,
        *sorted(hooks["pre-install"], key=by_weight),
        *ordinary,  # `helm template` prints them in Helm's install order
        *sorted(hooks["post-install"], key=by_weight),
    ]


def _group(api_version: str) -> str:
    return api_version.split("/")[0] if "/" in api_version else ""


def _pod_spec(obj: Manifest) -> dict[str, Any] | None:
    if obj["kind"] not in POD_TEMPLATE_KINDS:
        return None
    spec: dict[str, Any] = obj.get("spec") or {}
    if obj["kind"] == "Pod":
        return spec
    if obj["kind"] == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    return ((spec.get("template") or {}).get("spec")) or {}


def references(obj: Manifest) -> list[Key]:
    """The objects `obj` cannot work without: a pod's ServiceAccount and the ConfigMaps and
    Secrets it needs (not the optional ones), a binding's role and ServiceAccount subjects."""
    namespace = key_of(obj)[1]
    found: list[Key] = []
    pod = _pod_spec(obj)
    if pod is not None:
        account = pod.get("serviceAccountName") or pod.get("serviceAccount")
        if account and account != "default":
            found.append(("ServiceAccount", namespace, account))
        for volume in pod.get("volumes") or []:
            for kind, field, name_key in (
                ("ConfigMap", "configMap", "name"),
                ("Secret", "secret", "secretName"),
            ):
                source = volume.get(field)
                if source and not source.get("optional"):
                    found.append((kind, namespace, source[name_key]))
        for container in [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]:
            for source in container.get("envFrom") or []:
                for kind, field in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    ref = source.get(field)
                    if ref and not ref.get("optional"):
                        found.append((kind, namespace, ref["name"]))
    if obj["kind"] in ("RoleBinding", "ClusterRoleBinding"):
        role = obj.get("roleRef") or {}
        role_namespace = namespace if role.get("kind") == "Role" else ""
        found.append((str(role.get("kind")), role_namespace, str(role.get("name"))))
        for subject in obj.get("subjects") or []:
            if subject.get("kind") == "ServiceAccount":
                found.append(
                    ("ServiceAccount", subject.get("namespace", namespace), subject["name"])
                )
    return found


def provider_phase(step: Step | None) -> str:
    return step.phase if step is not None else ""


def replay(
    steps: list[Step], *, release_namespace: str = "default", fresh: Iterable[str] = ()
) -> list[str]:
    """What fails when `steps` run in order on a fresh cluster; one line per problem."""
    namespaces = set(FRESH_NAMESPACES) | {release_namespace, *fresh}
    first_step: dict[Key, Step] = {}
    for step in steps:
        first_step.setdefault(step.key, step)
    crd_steps = {
        (s.obj["spec"]["group"], s.obj["spec"]["names"]["kind"]): s
        for s in steps
        if s.obj["kind"] == "CustomResourceDefinition"
    }
    existing: set[Key] = set()
    kinds_served: set[tuple[str, str]] = set()
    problems: list[str] = []

    def missing(step: Step, what: str, provider: Step | None, *, deleted: bool = False) -> None:
        if provider is not None:
            why = f"which the release creates only later: {provider.describe()}"
        elif deleted:
            why = "which an earlier hook phase created and then deleted (hook-succeeded)"
        else:
            why = "which neither the release nor a fresh cluster has"
        problems.append(f"{step.describe()} needs {what}, {why}")

    for index, step in enumerate(steps):
        obj = step.obj
        kind, namespace, name = step.key
        if namespace and namespace not in namespaces:
            missing(step, f"Namespace {namespace}", first_step.get(("Namespace", "", namespace)))
        group = _group(str(obj["apiVersion"]))
        if group not in BUILTIN_GROUPS and (group, kind) not in kinds_served:
            missing(step, f"the CRD of {group}/{kind}", crd_steps.get((group, kind)))
        for needed in references(obj):
            if needed in existing or needed not in first_step:
                continue  # there already, or not the release's to make (e.g. a Job writes it)
            provider = next((s for s in steps[index + 1 :] if s.key == needed), None)
            if step.phase == provider_phase(provider) == "resources":
                continue  # ordinary resources go in as one batch; controllers retry
            what = f"{needed[0]} {'/'.join(part for part in needed[1:] if part)}"
            missing(step, what, provider, deleted=provider is None)
        existing.add(step.key)
        if kind == "Namespace":
            namespaces.add(name)
        if kind == "CustomResourceDefinition":
            kinds_served.add((obj["spec"]["group"], obj["spec"]["names"]["kind"]))
        phase_ends = index + 1 == len(steps) or steps[index + 1].phase != step.phase
        if phase_ends and step.phase.endswith("-install"):
            for done in steps[: index + 1]:
                policy = _annotation(done.obj, "helm.sh/hook-delete-policy")
                if done.phase == step.phase and "hook-succeeded" in policy:
                    existing.discard(done.key)
                    if done.obj["kind"] == "Namespace":
                        namespaces.discard(done.key[2])
    return problems
