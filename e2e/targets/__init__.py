"""Where the checks are aimed: a local lab, a kind cluster, or someone else's deployment."""
