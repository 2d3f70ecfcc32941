"""Status conditions as the render step decides them, and their Kubernetes form.

`render` returns `Condition`s without timestamps so that it stays pure; `to_k8s` adds
``lastTransitionTime`` (kept from the old condition while the status does not flip) and
``observedGeneration``, so an unchanged status renders to an unchanged dict and is not patched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Gateway API condition types and reasons (gateway.networking.k8s.io v1).
ACCEPTED = "Accepted"
PROGRAMMED = "Programmed"
RESOLVED_REFS = "ResolvedRefs"
CONFLICTED = "Conflicted"

INVALID = "Invalid"
INVALID_PARAMETERS = "InvalidParameters"
PENDING = "Pending"
NO_CONFLICTS = "NoConflicts"
PROTOCOL_CONFLICT = "ProtocolConflict"
PORT_UNAVAILABLE = "PortUnavailable"
UNSUPPORTED_PROTOCOL = "UnsupportedProtocol"
UNSUPPORTED_VALUE = "UnsupportedValue"
INVALID_CERTIFICATE_REF = "InvalidCertificateRef"
INVALID_ROUTE_KINDS = "InvalidRouteKinds"
NO_MATCHING_PARENT = "NoMatchingParent"
NOT_ALLOWED_BY_LISTENERS = "NotAllowedByListeners"
BACKEND_NOT_FOUND = "BackendNotFound"
INVALID_KIND = "InvalidKind"


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str = ""


def ok(ctype: str, message: str = "") -> Condition:
    """The positive condition, whose reason is its type (Accepted/Accepted, ...)."""
    return Condition(ctype, True, ctype, message)


def to_k8s(
    new: Sequence[Condition],
    old: object,
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """Kubernetes `metav1.Condition` dicts; `old` is the current ``conditions`` list, if any."""
    previous: dict[str, Mapping[str, Any]] = {}
    if isinstance(old, list):
        previous = {str(o.get("type")): o for o in old if isinstance(o, Mapping)}
    out: list[dict[str, Any]] = []
    for cond in new:
        status = "True" if cond.status else "False"
        before = previous.get(cond.type)
        since = now
        if before is not None and before.get("status") == status:
            since = str(before.get("lastTransitionTime") or now)
        item: dict[str, Any] = {
            "type": cond.type,
            "status": status,
            "reason": cond.reason,
            "message": cond.message,
            "lastTransitionTime": since,
        }
        if generation is not None:
            item["observedGeneration"] = generation
        out.append(item)
    return out
