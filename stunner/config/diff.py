"""Diff, for reconciling a running daemon with a new config."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from .model import ClusterConfig, ListenerConfig, StunnerConfig

_Named = TypeVar("_Named", ListenerConfig, ClusterConfig)


@dataclass(frozen=True, slots=True)
class ConfigDiff:
    """What `Stunner.apply` must touch; ``ConfigDiff()`` means nothing changed."""

    metrics_endpoint_changed: bool = False
    healthcheck_endpoint_changed: bool = False
    loglevel_changed: bool = False
    limits_changed: bool = False
    auth_changed: bool = False
    listeners_added: tuple[ListenerConfig, ...] = ()
    listeners_removed: tuple[ListenerConfig, ...] = ()
    listeners_changed: tuple[tuple[ListenerConfig, ListenerConfig], ...] = ()
    clusters_added: tuple[ClusterConfig, ...] = ()
    clusters_removed: tuple[ClusterConfig, ...] = ()
    clusters_changed: tuple[tuple[ClusterConfig, ClusterConfig], ...] = ()


def _diff_named(
    old: Sequence[_Named], new: Sequence[_Named]
) -> tuple[tuple[_Named, ...], tuple[_Named, ...], tuple[tuple[_Named, _Named], ...]]:
    before = {item.name: item for item in old}
    after = {item.name: item for item in new}
    added = tuple(item for item in new if item.name not in before)
    removed = tuple(item for item in old if item.name not in after)
    changed = tuple(
        (before[item.name], item)
        for item in new
        if item.name in before and before[item.name] != item
    )
    return added, removed, changed


def diff(old: StunnerConfig, new: StunnerConfig) -> ConfigDiff:
    """What changed from `old` to `new`; listeners and clusters are matched by name."""
    l_added, l_removed, l_changed = _diff_named(old.listeners, new.listeners)
    c_added, c_removed, c_changed = _diff_named(old.clusters, new.clusters)
    return ConfigDiff(
        metrics_endpoint_changed=old.admin.metrics_endpoint != new.admin.metrics_endpoint,
        healthcheck_endpoint_changed=(
            old.admin.healthcheck_endpoint != new.admin.healthcheck_endpoint
        ),
        loglevel_changed=old.admin.loglevel != new.admin.loglevel,
        limits_changed=(
            (old.admin.limits, old.admin.user_quota) != (new.admin.limits, new.admin.user_quota)
        ),
        auth_changed=old.auth != new.auth,
        listeners_added=l_added,
        listeners_removed=l_removed,
        listeners_changed=l_changed,
        clusters_added=c_added,
        clusters_removed=c_removed,
        clusters_changed=c_changed,
    )
