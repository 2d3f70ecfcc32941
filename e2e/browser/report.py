"""The browser scenario's part of the e2e report: call-setup timing and the call's traffic.

Written beside report.md as browser.md (and browser.json), with plots/browser-call.png: packets
per second relayed during the video call, from Prometheus `query_range`, the panel an operator
would look at during a call.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from e2e.prom import PromClient

log = logging.getLogger(__name__)

RATE_WINDOW = "3s"  # three 1 s scrapes: the shortest window rate() is stable over


@dataclass
class Setup:
    """Call-setup figures of one transport, in ms from the start of the call."""

    transport: str
    first_relay_ms: dict[str, float]  # per side
    open_ms: float  # data channel open on both sides (video: connected)
    stun_retransmissions: int | None = None  # UDP: from the capture


@dataclass
class BrowserReport:
    setups: list[Setup] = field(default_factory=list)
    call: dict[str, float] = field(default_factory=dict)  # video call figures
    plot: str = ""

    def notes(self) -> list[str]:
        """One line per transport for the report header and the terminal."""
        out = []
        for s in self.setups:
            relay = max(s.first_relay_ms.values())
            line = f"browser {s.transport}: first relay candidate {relay:.0f} ms, "
            done = "connected" if s.transport == "video" else "data channel open"
            line += f"{done} {s.open_ms:.0f} ms"
            if s.stun_retransmissions:
                line += f" ({s.stun_retransmissions} STUN retransmissions)"
            out.append(line)
        return out

    def write(self, outdir: Path) -> None:
        (outdir / "browser.json").write_text(json.dumps(asdict(self), indent=1))
        lines = [
            "# Browser calls (Chromium, relay-only, through stunnerd)",
            "",
            "| transport | first relay candidate (caller / callee) "
            "| data channel open / connected | STUN retransmissions (both sides) |",
            "|---|---|---|---|",
        ]
        for s in self.setups:
            relay = " / ".join(f"{v:.0f} ms" for v in s.first_relay_ms.values())
            again = "" if s.stun_retransmissions is None else str(s.stun_retransmissions)
            lines.append(f"| {s.transport} | {relay} | {s.open_ms:.0f} ms | {again} |")
        if self.call:
            lines += ["", "## Video call", ""]
            lines += [f"- {k}: {v:g}" for k, v in self.call.items()]
        if self.plot:
            lines += ["", f"![packets/s relayed during the video call]({self.plot})"]
        (outdir / "browser.md").write_text("\n".join(lines) + "\n")


def plot_call(
    outdir: Path,
    prom: PromClient,
    selector: str,
    names: list[str],
    call_start: float,
    end: float,
) -> str:
    """plots/browser-call.png, the panels of an operator's dashboard during the call: packets/s
    per listener and direction (listener solid, cluster dashed) and bits/s relayed to peers.
    Returns the path relative to the report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sel = f'{selector}, name=~"{"|".join(names)}"'
    panels = (
        ("packets/s", "stunner_listener_packets_total", "-", 1.0),
        ("packets/s", "stunner_cluster_packets_total", "--", 1.0),
        ("bits/s to and from peers", "stunner_cluster_bytes_total", "-", 8.0),
    )
    fig, axes = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    for ylabel, family, style, scale in panels:
        ax = axes[0] if ylabel == "packets/s" else axes[1]
        query = f"sum by (name, direction) (rate({family}{{{sel}}}[{RATE_WINDOW}]))"
        try:
            series = prom.query_range(query, call_start - 2, end, 1.0)
        except Exception as exc:  # the plot must not hide the test results
            log.warning("browser plot: %s", exc)
            continue
        kind = family.split("_")[1]
        for labels, points in series:
            ax.plot(
                [t - call_start for t, _ in points],
                [v * scale for _, v in points],
                style,
                label=f"{kind} {labels.get('name', '')} {labels.get('direction', '')}",
            )
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axes[0].set_title(f"video call through stunnerd (rate over {RATE_WINDOW}, 1 s scrapes)")
    axes[1].set_xlabel("seconds since the call started")
    fig.tight_layout()
    plots = outdir / "plots"
    plots.mkdir(exist_ok=True)
    fig.savefig(plots / "browser-call.png", dpi=80)
    plt.close(fig)
    return "plots/browser-call.png"
