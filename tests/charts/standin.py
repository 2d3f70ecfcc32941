"""A stand-in for kube-prometheus-stack with the same install-time structure as 88.x.

It renders no working Prometheus. It renders what decides whether `helm install` gets through
on a fresh cluster, laid out as kube-prometheus-stack 88.x lays it out (written from its
structure, not copied):

- CRDs in a `crds/` directory (the real chart keeps them in its `crds` subchart's `crds/`);
- the admission webhook's certificate machinery as hooks in the dependency's namespace
  (`namespaceOverride`, else the release namespace): a ServiceAccount, Role and RoleBinding, a
  ClusterRole and ClusterRoleBinding, all `pre-install,pre-upgrade,post-install,post-upgrade`
  with `before-hook-creation,hook-succeeded`, no weight; a `pre-install,pre-upgrade` Job that
  creates the certificate Secret, and a `post-install,post-upgrade` Job that patches the webhook
  configurations, both running as that ServiceAccount;
- as ordinary resources: the operator's ServiceAccount, Deployment (mounting the Secret the
  create Job writes) and Service, and the two webhook configurations;
- a marker ConfigMap, so tests can tell that the dependency received this chart's values.
"""

from __future__ import annotations

from pathlib import Path

import yaml

STANDIN_MARKER = "kube-prometheus-stack-standin"

_NAMESPACE = "{{ .Values.namespaceOverride | default .Release.Namespace }}"
_FULLNAME = '{{ .Values.fullnameOverride | default (printf "%s-kps" .Release.Name) }}'
_ADMISSION = _FULLNAME + "-admission"
_RBAC_HOOK = (
    "  annotations:\n"
    '    "helm.sh/hook": pre-install,pre-upgrade,post-install,post-upgrade\n'
    '    "helm.sh/hook-delete-policy": before-hook-creation,hook-succeeded\n'
)
_WEBHOOKS_ON = "{{- if .Values.prometheusOperator.admissionWebhooks.patch.enabled }}\n"

VALUES = """\
namespaceOverride: ""
fullnameOverride: ""
prometheusOperator:
  admissionWebhooks:
    patch:
      enabled: true
"""


def _job(suffix: str, events: str, command: str) -> str:
    return (
        _WEBHOOKS_ON + "apiVersion: batch/v1\nkind: Job\nmetadata:\n"
        f"  name: {_ADMISSION}-{suffix}\n  namespace: {_NAMESPACE}\n"
        "  annotations:\n"
        f'    "helm.sh/hook": {events}\n'
        '    "helm.sh/hook-delete-policy": before-hook-creation,hook-succeeded\n'
        "spec:\n  template:\n    spec:\n"
        "      restartPolicy: OnFailure\n"
        f"      serviceAccountName: {_ADMISSION}\n"
        "      containers:\n"
        f"        - name: {suffix}\n"
        "          image: registry.invalid/kube-webhook-certgen:standin\n"
        f"          args: [{command}, --secret-name={_ADMISSION}]\n"
        "{{- end }}\n"
    )


def _crd(kind: str, plural: str) -> str:
    group = "monitoring.coreos.com"
    return yaml.safe_dump(
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {
                "group": group,
                "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
                "scope": "Namespaced",
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            }
                        },
                    }
                ],
            },
        }
    )


TEMPLATES = {
    "marker.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
        f"  name: {STANDIN_MARKER}\n  namespace: {_NAMESPACE}\n"
        "data:\n  chart: {{ .Chart.Name }}-{{ .Chart.Version }}\n"
    ),
    "admission-serviceaccount.yaml": (
        _WEBHOOKS_ON + "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n"
        f"  name: {_ADMISSION}\n  namespace: {_NAMESPACE}\n" + _RBAC_HOOK + "{{- end }}\n"
    ),
    "admission-role.yaml": (
        _WEBHOOKS_ON + "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n"
        f"  name: {_ADMISSION}\n  namespace: {_NAMESPACE}\n" + _RBAC_HOOK + "rules:\n"
        '  - apiGroups: [""]\n    resources: [secrets]\n    verbs: [get, create]\n'
        "{{- end }}\n"
    ),
    "admission-rolebinding.yaml": (
        _WEBHOOKS_ON + "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n"
        f"  name: {_ADMISSION}\n  namespace: {_NAMESPACE}\n" + _RBAC_HOOK + "roleRef:\n"
        "  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n"
        f"  name: {_ADMISSION}\n"
        "subjects:\n  - kind: ServiceAccount\n"
        f"    name: {_ADMISSION}\n    namespace: {_NAMESPACE}\n"
        "{{- end }}\n"
    ),
    "admission-clusterrole.yaml": (
        _WEBHOOKS_ON + "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n"
        f"  name: {_ADMISSION}\n" + _RBAC_HOOK + "rules:\n"
        "  - apiGroups: [admissionregistration.k8s.io]\n"
        "    resources: [validatingwebhookconfigurations, mutatingwebhookconfigurations]\n"
        "    verbs: [get, update]\n"
        "{{- end }}\n"
    ),
    "admission-clusterrolebinding.yaml": (
        _WEBHOOKS_ON
        + "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n"
        f"  name: {_ADMISSION}\n" + _RBAC_HOOK + "roleRef:\n"
        "  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n"
        f"  name: {_ADMISSION}\n"
        "subjects:\n  - kind: ServiceAccount\n"
        f"    name: {_ADMISSION}\n    namespace: {_NAMESPACE}\n"
        "{{- end }}\n"
    ),
    "admission-create-job.yaml": _job("create", "pre-install,pre-upgrade", "create"),
    "admission-patch-job.yaml": _job("patch", "post-install,post-upgrade", "patch"),
    "operator.yaml": (
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n"
        f"  name: {_FULLNAME}-operator\n  namespace: {_NAMESPACE}\n"
        "---\n"
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n"
        f"  name: {_FULLNAME}-operator\n  namespace: {_NAMESPACE}\n"
        "spec:\n  selector:\n    matchLabels: {app: standin-operator}\n"
        "  template:\n    metadata:\n      labels: {app: standin-operator}\n"
        "    spec:\n"
        f"      serviceAccountName: {_FULLNAME}-operator\n"
        "      containers:\n        - name: operator\n"
        "          image: registry.invalid/prometheus-operator:standin\n"
        "          volumeMounts: [{name: tls, mountPath: /cert, readOnly: true}]\n"
        "      volumes:\n        - name: tls\n"
        f"          secret: {{secretName: {_ADMISSION}}}\n"
        "---\n"
        "apiVersion: v1\nkind: Service\nmetadata:\n"
        f"  name: {_FULLNAME}-operator\n  namespace: {_NAMESPACE}\n"
        "spec:\n  selector: {app: standin-operator}\n"
        "  ports: [{name: https, port: 443, targetPort: 10250}]\n"
    ),
    "webhooks.yaml": "".join(
        "---\n"
        f"apiVersion: admissionregistration.k8s.io/v1\nkind: {kind}WebhookConfiguration\n"
        f"metadata:\n  name: {_ADMISSION}\n"
        "webhooks:\n  - name: prometheusrule.monitoring.coreos.com\n"
        "    admissionReviewVersions: [v1]\n    sideEffects: None\n    failurePolicy: Ignore\n"
        "    clientConfig:\n      service:\n"
        f"        name: {_FULLNAME}-operator\n        namespace: {_NAMESPACE}\n"
        f"        path: /admission-prometheusrules/{path}\n"
        "    rules:\n      - apiGroups: [monitoring.coreos.com]\n        apiVersions: ['*']\n"
        "        resources: [prometheusrules]\n        operations: [CREATE, UPDATE]\n"
        for kind, path in (("Validating", "validate"), ("Mutating", "mutate"))
    ),
}

CRDS = {
    "crd-podmonitors.yaml": _crd("PodMonitor", "podmonitors"),
    "crd-prometheusrules.yaml": _crd("PrometheusRule", "prometheusrules"),
    "crd-prometheuses.yaml": _crd("Prometheus", "prometheuses"),
}


def write_standin(directory: Path, name: str, version: str) -> Path:
    """The stand-in chart's source directory, ready for `helm package`."""
    chart = directory / name
    (chart / "templates").mkdir(parents=True)
    (chart / "crds").mkdir()
    metadata = {
        "apiVersion": "v2",
        "name": name,
        "version": version,
        "description": "Test stand-in for the pinned dependency: its install-time structure only.",
    }
    (chart / "Chart.yaml").write_text(yaml.safe_dump(metadata))
    (chart / "values.yaml").write_text(VALUES)
    for filename, text in TEMPLATES.items():
        (chart / "templates" / filename).write_text(text)
    for filename, text in CRDS.items():
        (chart / "crds" / filename).write_text(text)
    return chart
