"""The control plane: a kopf operator that renders Gateway API objects into stunnerd config.

`render` is pure and shared with ``stunnerctl render``; `reconcile` gathers objects through the
small `kube.ClusterApi` wrapper; `handlers` only wire kopf events to the reconciler.
"""
