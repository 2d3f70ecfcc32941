"""End-to-end harness: real stunnerd, real TURN clients, a real Prometheus (`nox -s e2e`)."""
