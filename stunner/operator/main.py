"""``stunner-operator``: run the kopf operator standalone over all namespaces.

stunner-operator [--liveness URL] [--namespace NS ...] [-v]

kopf and kubernetes-asyncio come with the ``[operator]`` extra. They are imported only once the
arguments are parsed, so ``--help`` works without them and a plain ``pip install .`` gets one line
that names the extra instead of a traceback.
"""

from __future__ import annotations

import logging
import sys

from stunner.cli._args import OneLineParser

DEFAULT_LIVENESS = "http://0.0.0.0:8081/healthz"
# The modules the [operator] extra brings.
OPERATOR_EXTRA = ("kopf", "kubernetes_asyncio")


def build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog="stunner-operator",
        description="Render Gateway API objects into the stunnerd config ConfigMap.",
    )
    parser.add_argument(
        "--liveness",
        default=DEFAULT_LIVENESS,
        metavar="URL",
        help="kopf liveness endpoint (default %(default)s); '' turns it off",
    )
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="watch only these namespaces (repeatable; default: all)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        import kopf

        from . import handlers  # noqa: F401  (registers the handlers with kopf)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in OPERATOR_EXTRA:
            raise
        sys.stderr.write(
            f"stunner-operator: error: {exc.name} is not installed; the operator needs the "
            "[operator] extra: pip install 'stunner[operator]'\n"
        )
        return 1
    kopf.run(
        standalone=True,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness or None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
