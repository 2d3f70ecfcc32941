"""stunner: a TURN media gateway for Kubernetes, built around monitoring."""

__version__ = "0.1.0"
