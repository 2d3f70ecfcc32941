"""Chart tests: the real Helm engine, promtool and schema validation, all offline."""
