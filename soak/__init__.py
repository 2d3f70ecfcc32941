"""Soak test driver: ``python -m soak --minutes N`` (see ``soak.driver``)."""
