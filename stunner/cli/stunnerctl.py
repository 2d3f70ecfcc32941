"""``stunnerctl``: offline tools for the Kubernetes side of stunner.

    stunnerctl render --gatewayconfig gc.yaml --gateway gw.yaml --udproute r.yaml \\
        [--service svc.yaml ...] [--endpoints eps.yaml ...] [--secret s.yaml ...] [-n NS]

``render`` prints the stunnerd config the operator would write for these objects, using the
operator's own render function. Each file may hold several YAML documents or a ``List``.
Exit status: 0 rendered, 1 the GatewayConfig was rejected, 2 bad arguments or files.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import yaml

from ..operator.conditions import CONFLICTED, PROGRAMMED, Condition
from ..operator.render import RenderInput, RenderResult, dump_config, render
from ..operator.resources import Obj, name_of
from ._args import OneLineParser

# option -> the kind its files must hold
_INPUTS = {
    "gatewayconfig": "GatewayConfig",
    "gateway": "Gateway",
    "udproute": "UDPRoute",
    "service": "Service",
    "endpoints": "Endpoints",
    "secret": "Secret",
}
# option -> what its objects are for, for --help
_HELP = {
    "gatewayconfig": "the GatewayConfig (exactly one): auth, admin endpoints, relay port range",
    "gateway": "Gateways, taken as this GatewayConfig's: one stunnerd listener per listener",
    "udproute": "UDPRoutes: one cluster per route that attaches to a listener",
    "service": "the routes' backend Services: their ClusterIPs become cluster endpoints",
    "endpoints": "the backends' Endpoints: their ready addresses become cluster endpoints",
    "secret": "Secrets that TLS listeners' certificateRefs or the GatewayConfig's authRef name",
}
EXAMPLE = (
    "example (the inputs are in the repository):\n"
    "  stunnerctl render --gatewayconfig examples/k8s/gatewayconfig.yaml \\\n"
    "      --gateway examples/k8s/gateway.yaml --udproute examples/k8s/udproute.yaml \\\n"
    "      --service examples/k8s/service.yaml --endpoints examples/k8s/endpoints.yaml\n\n"
    "Each FILE may hold several YAML documents or a List. Exit status: 0 rendered, 1 the\n"
    "GatewayConfig was rejected, 2 bad arguments or files."
)


class UsageError(Exception):
    """A bad argument or input file: one line on stderr, exit status 2."""


def build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog="stunnerctl", description="Offline tools for stunner on Kubernetes."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    rend = commands.add_parser(
        "render",
        prog="stunnerctl",
        usage="stunnerctl render --gatewayconfig FILE [--gateway FILE ...] [options]",
        help="print the stunnerd config for a GatewayConfig, Gateways and UDPRoutes",
        description="Print the stunnerd config (YAML) that the operator would write for these\n"
        "objects. What their statuses would report as wrong goes to stderr as warnings.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rend.add_argument("--gatewayconfig", required=True, metavar="FILE", help=_HELP["gatewayconfig"])
    for option in list(_INPUTS)[1:]:
        rend.add_argument(
            f"--{option}",
            action="append",
            default=[],
            metavar="FILE",
            help=f"{_HELP[option]} (repeatable)",
        )
    rend.add_argument(
        "-n",
        "--namespace",
        default="default",
        help="namespace for objects that name none (default %(default)s)",
    )
    return parser


def _documents(path: str) -> Iterator[Any]:
    try:
        with open(path, encoding="utf-8") as f:
            docs = list(yaml.safe_load_all(f))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    for doc in docs:
        if isinstance(doc, Mapping) and doc.get("kind") == "List":
            yield from doc.get("items") or []
        elif doc is not None:
            yield doc


def load_objects(paths: Sequence[str], kind: str, namespace: str) -> list[Obj]:
    """The objects in `paths`, all of `kind`, with `namespace` filled in where missing."""
    out: list[Obj] = []
    for path in paths:
        for doc in _documents(path):
            got = doc.get("kind") if isinstance(doc, Mapping) else type(doc).__name__
            if got != kind:
                raise UsageError(f"{path}: expected {kind} objects, got {got}")
            metadata = dict(doc.get("metadata") or {})
            if not metadata.get("name"):
                raise UsageError(f"{path}: a {kind} without metadata.name")
            metadata.setdefault("namespace", namespace)
            out.append({**doc, "metadata": metadata})
    return out


def _bad(c: Condition) -> bool:
    """Conflicted is the one type where True is bad news; Programmed only echoes the others."""
    if c.type == PROGRAMMED:
        return False
    return c.status if c.type == CONFLICTED else not c.status


def problems(result: RenderResult) -> list[str]:
    """What the status would report as wrong, one line each."""
    lines = []
    for gw, status in sorted(result.gateways.items()):
        for lis in status.listeners:
            where = f"Gateway {name_of(gw)} listener {lis.name}"
            lines += [f"{where}: {c.reason}: {c.message}" for c in lis.conditions if _bad(c)]
    for route, parents in sorted(result.routes.items()):
        for parent in parents:
            for c in parent.conditions:
                if not c.status:
                    where = f"UDPRoute {name_of(route)} parent {parent.parent_ref.get('name')}"
                    lines.append(f"{where}: {c.reason}: {c.message}")
    return list(dict.fromkeys(lines))


def run_render(args: argparse.Namespace) -> int:
    loaded = {
        option: load_objects(
            [args.gatewayconfig] if option == "gatewayconfig" else getattr(args, option),
            kind,
            args.namespace,
        )
        for option, kind in _INPUTS.items()
    }
    if len(loaded["gatewayconfig"]) != 1:
        found = len(loaded["gatewayconfig"])
        raise UsageError(f"{args.gatewayconfig}: expected one GatewayConfig, found {found}")
    result = render(
        RenderInput(
            gatewayconfig=loaded["gatewayconfig"][0],
            gateways=loaded["gateway"],
            routes=loaded["udproute"],
            services=loaded["service"],
            endpoints=loaded["endpoints"],
            secrets=loaded["secret"],
        )
    )
    for line in problems(result):
        sys.stderr.write(f"stunnerctl: warning: {line}\n")
    if result.config is None:
        sys.stderr.write(f"stunnerctl: error: {result.error}\n")
        return 1
    sys.stdout.write(dump_config(result.config))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run_render(args)
    except UsageError as exc:
        sys.stderr.write(f"stunnerctl: error: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
