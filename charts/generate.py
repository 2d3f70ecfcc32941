"""Write the files the charts share: the dashboard JSON and the alert rules, into each chart.

Helm packages only what is inside a chart's directory, so both charts carry a copy.
``python charts/generate.py`` writes them; ``--check`` only reports copies that are stale.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

CHARTS = Path(__file__).resolve().parent
CHART_NAMES = ("stunner", "stunner-prometheus")
RULES = CHARTS / "rules" / "stunner-rules.yaml"


def _dashboard_module() -> ModuleType:
    path = CHARTS / "dashboards" / "stunner_dashboard.py"
    spec = importlib.util.spec_from_file_location("stunner_dashboard", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while it executes
    spec.loader.exec_module(module)
    return module


def outputs() -> dict[Path, str]:
    """Every generated file and the text it must hold."""
    dashboard = _dashboard_module().render()
    rules = RULES.read_text()
    files = {}
    for chart in CHART_NAMES:
        files[CHARTS / chart / "dashboards" / "stunner.json"] = dashboard
        files[CHARTS / chart / "rules" / "stunner-rules.yaml"] = rules
    return files


def main(argv: list[str]) -> int:
    stale = [path for path, text in outputs().items() if _read(path) != text]
    if "--check" in argv:
        for path in stale:
            sys.stderr.write(f"stale: {path.relative_to(CHARTS)} (run python charts/generate.py)\n")
        return 1 if stale else 0
    for path, text in outputs().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return 0


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
