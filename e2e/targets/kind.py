"""The kind target, through e2e/kind_setup.py (written by the Kubernetes helper).

Expected from kind_setup: `kind_unavailable_reason() -> str | None`, and a context manager
`kind_target()` yielding a mapping with the external target's inputs: `turn_uris` (list of
NAME=URI), `username`, `password`, `peer` (HOST:PORT), `prometheus_url`, optional `selector`.
Until both exist, or when a reason is returned, the kind scenarios skip with one line.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator

from e2e.targets.base import Target
from e2e.targets.external import external_target


def kind_skip_reason() -> str | None:
    try:
        kind_setup = importlib.import_module("e2e.kind_setup")
    except ImportError as exc:
        return f"kind: e2e/kind_setup.py is not importable yet ({exc})"
    reason: str | None = kind_setup.kind_unavailable_reason()
    if reason:
        return f"kind: {reason}"
    if not hasattr(kind_setup, "kind_target"):
        return "kind: e2e/kind_setup.py has no kind_target() context manager yet"
    return None


@contextlib.contextmanager
def kind_target() -> Iterator[Target]:
    kind_setup = importlib.import_module("e2e.kind_setup")
    with kind_setup.kind_target() as info:
        target = external_target(
            turn_uris=list(info["turn_uris"]),
            username=info["username"],
            password=info["password"],
            peer=info["peer"],
            prometheus_url=info["prometheus_url"],
            selector=info.get("selector", ""),
        )
        target.kind = "kind"
        yield target
