"""pion/turn beside coturn and stunnerd in the report: its throughput table, the ratios, and
the prose docs/performance.md carries about it (rendered from ``DOC``, never hand-edited).

``report`` imports this module and this module uses ``report``'s helpers only inside
functions, so the import cycle is harmless.
"""

from __future__ import annotations

from typing import Any

from . import report

# Ratios shown wherever pion has a figure: each against coturn, and stunnerd against pion.
RATIOS = (("stunnerd", "coturn"), ("pion", "coturn"), ("stunnerd", "pion"))


def ratios_note(rates: dict[str, float]) -> str:
    """``stunnerd / coturn: 0.80x, pion / coturn: ...`` for the servers that have a rate."""
    parts = [
        f"{a} / {b}: {report.fmt_ratio(report.ratio(rates.get(a), rates.get(b)))}"
        for a, b in RATIOS
        if "pion" not in (a, b) or "pion" in rates
    ]
    return ", ".join(parts)


def throughput_table(data: dict[str, Any]) -> report.Table:
    """Per load: the three servers' datagrams per CPU-second and the ratios between them."""
    rows = []
    for cell in report.cells(data):
        rate = {
            s: cell[s]["per_cpu_s"] if cell[s] else None for s in ("stunnerd", "coturn", "pion")
        }
        pion = cell["pion"]
        label = [f"{cell['size']} B", str(cell["allocations"])]
        if "transport" in cell:
            label.insert(0, str(cell["transport"]))
        rows.append(
            [
                *label,
                *(report.fmt_int(rate[s]) for s in ("stunnerd", "coturn", "pion")),
                *(report.fmt_ratio(report.ratio(rate[a], rate[b])) for a, b in RATIOS),
                report.fmt_int(pion and pion["per_wall_s"]),
                report.fmt_pct(pion and pion["loss_pct"]),
                report.fmt_pct(pion and 100 * pion["cpu_util"], 0),
            ]
        )
    headers = ["payload", "allocs"]
    if any("transport" in cell for cell in report.cells(data)):
        headers.insert(0, "transport")
    return report.Table(
        "pion/turn beside coturn: relayed datagrams per server CPU-second",
        [
            *headers,
            "stunnerd /CPU-s",
            "coturn /CPU-s",
            "pion /CPU-s",
            *(f"{a}/{b}" for a, b in RATIOS),
            "pion /s",
            "pion loss",
            "pion CPU",
        ],
        rows,
        "The same runs as the table above; pion ran with GOMAXPROCS="
        f"{data.get('pion', {}).get('gomaxprocs', '?')}, taking turns with the other two "
        "under each load. pion's build (when it ran), start-ups, loads and memory section took "
        f"{report.fmt_int(data.get('wall_s', {}).get('pion'))} s of this run's wall time.",
    )


def tables(data: dict[str, Any]) -> list[report.Table]:
    """The pion tables of this run (none when pion did not run)."""
    runs = data.get("throughput", {}).get("runs", [])
    if not any(r["server"] == "pion" for r in runs):
        return []
    return [throughput_table(data)]


DOC = """\
## pion/turn, the third server

Upstream STUNner's stunnerd is written in Go on [pion/turn](https://github.com/pion/turn);
STUNner v0.15 used pion/turn v2. So the bench runs pion/turn as a third server, and shows it
beside coturn in the throughput, spread, allocation, memory and perf tables (its scrape
columns stay empty: like coturn, it has no `/metrics`). The server is `bench/pion/main.go`,
about 250 lines written for this bench on pion/turn's public API: TURN over UDP and TCP on one
port, and over TLS too when given `-tls-port`, `-cert` and `-key`; one user with long-term
credentials; UDP relay sockets on the listen address, in the relay port range the other
servers use; every peer admitted (pion's default permission handler); logs at `warn`.

- **Install.** Debian has all it needs, and the build is offline:

  ```console
  apt-get install golang-go golang-github-pion-turn.v2-dev
  ```

  On bookworm `golang-go` is Go 1.19 and `golang-github-pion-turn.v2-dev` is pion/turn 2.1.0,
  with its dependencies as Go source under `/usr/share/gocode/src`. Without them the bench
  says so in one line (`pion/turn: go is not installed (apt-get install golang-go
  golang-github-pion-turn.v2-dev): skipped`) and measures stunnerd and coturn alone.
- **Build.** `bench/pionbuild.py` runs `go build -trimpath` in `bench/pion/` with
  `GO111MODULE=off GOPATH=/usr/share/gocode GOPROXY=off CGO_ENABLED=0`: GOPATH mode on
  Debian's source tree, nothing downloaded. The `/v2` import paths resolve through Go's
  minimal module compatibility. The binary is kept in `bench-results/pion/` under a hash of
  `main.go`, the Go version and the pion sources, with Go's build cache beside it, so only the
  first run after a change builds (about 25 s with a cold cache on this machine).
- **One core: GOMAXPROCS=1.** coturn runs one relay thread and stunnerd one process, so pion
  gets one processor for Go code (`-gomaxprocs 1`; the bench's `--pion-gomaxprocs N` changes
  it). Its CPU time is summed over all its threads, as for the others. With a second
  processor, pion would take the core that uclient and the echo peer need on this 2-core
  machine, and spend CPU handing goroutines between threads, which the other two do not pay:
  `nox -s bench -- --quick --only throughput --no-docs --pion-gomaxprocs 2` shows the
  difference.
- **Socket buffers.** Stock pion leaves its UDP sockets at the kernel's default buffers (208
  KiB here). stunnerd and coturn ask for 4 MiB on theirs, so `main.go` takes
  `-socket-buffer` and the bench asks for the same 4 MiB on pion's listener and relay
  sockets: a burst meets the same room in all three, and loss compares like with like.
- **How pion relays.** One goroutine reads the UDP listener and handles each client datagram
  (STUN or ChannelData) in turn, with one `recvfrom` and one `sendto`; each allocation has a
  goroutine of its own that reads its relay socket and writes ChannelData back through the
  listener socket; each TCP or TLS connection has its own goroutine. Nothing is batched.
"""
