"""TCP and TLS client legs in the bench: uclient's arguments, the servers' listeners and TLS
options, the certificate, and the per-transport tables and targets."""

from __future__ import annotations

import base64
import shutil
import ssl
from pathlib import Path
from typing import Any

import pytest

from bench import certs, report, stream_instructions, streams
from bench.load import LoadResult, LoadSpec, uclient_argv
from bench.servers import Coturn, Credentials, Stunnerd
from stunner.config.certs import server_context

needs_openssl = pytest.mark.skipif(certs.openssl_binary() is None, reason="needs openssl")
needs_uclient = pytest.mark.skipif(
    shutil.which("turnutils_uclient") is None, reason="needs coturn's turnutils_uclient"
)


class Server:
    name = "x"
    host = "127.0.0.1"
    port = 3478
    tls_port: int | None = 5349


@needs_uclient
@pytest.mark.parametrize(
    ("transport", "flags", "port"),
    [("udp", [], "3478"), ("tcp", ["-t"], "3478"), ("tls", ["-t", "-S"], "5349")],
)
def test_uclient_arguments_per_transport(transport: str, flags: list[str], port: str) -> None:
    argv = uclient_argv(Server(), ("u", "p"), ("127.0.0.2", 9), LoadSpec(1, 100, 10, 0, transport))
    assert [a for a in argv if a in ("-t", "-S")] == flags
    assert argv[argv.index("-p") + 1] == port


@needs_uclient
def test_tls_load_against_a_server_without_tls_is_refused() -> None:
    server = Server()
    server.tls_port = None
    with pytest.raises(ValueError, match="serves no TLS"):
        uclient_argv(server, ("u", "p"), ("127.0.0.2", 9), LoadSpec(1, 100, 10, 0, "tls"))


@needs_openssl
def test_the_certificate_loads_and_is_made_once(tmp_path: Path) -> None:
    cert, key = certs.self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    assert certs.self_signed(tmp_path) == (cert, key)
    assert key.stat().st_mode & 0o777 == 0o600


@needs_openssl
def test_stunnerd_serves_udp_and_tcp_on_one_port_and_tls_on_another(tmp_path: Path) -> None:
    server = Stunnerd(tmp_path, "127.0.0.1", Credentials(), "127.0.0.2")
    listeners = server.config()["listeners"]
    assert [(lis["protocol"], lis["port"]) for lis in listeners] == [
        ("UDP", server.port),
        ("TCP", server.port),
        ("TLS", server.tls_port),
    ]
    tls = listeners[2]
    server_context(base64.b64decode(tls["cert"]), base64.b64decode(tls["key"]))  # loads
    assert server.config()["admin"]["limits"] == {"tcp_connections_per_source": 0}


@needs_openssl
@pytest.mark.skipif(shutil.which("turnserver") is None, reason="needs coturn's turnserver")
def test_coturn_gets_tls_on_its_tls_port(tmp_path: Path) -> None:
    server = Coturn(tmp_path, "127.0.0.1", Credentials())
    argv = server.command()
    assert "--no-tls" not in argv and "--no-dtls" in argv
    assert argv[argv.index("--tls-listening-port") + 1] == str(server.tls_port)
    assert server.cert is not None
    assert argv[argv.index("--cert") + 1] == str(server.cert[0])


def run(server: str, transport: str, size: int, relayed_half: int, cpu: float) -> dict[str, Any]:
    result = LoadResult(server, 10, size, 1000, 0, transport)
    result.sent = result.client_rx = result.peer_rx = relayed_half
    result.window_s, result.cpu_s = 2.0, cpu
    return result.to_json()


def data() -> dict[str, Any]:
    runs = [
        run("stunnerd", "udp", 100, 50_000, 1.0),
        run("coturn", "udp", 100, 50_000, 0.5),
        run("stunnerd", "tcp", 100, 30_000, 0.5),
        run("coturn", "tcp", 100, 30_000, 0.4),
        run("stunnerd", "tls", 100, 10_000, 0.5),
        run("coturn", "tls", 100, 10_000, 0.5),
    ]
    return {"throughput": {"repeats": 1, "runs": runs}}


def test_udp_cells_leave_the_stream_runs_out() -> None:
    cells = report.cells(data())
    assert [(c["size"], c["stunnerd"]["runs"], c["ratio"]) for c in cells] == [(100, 1, 0.5)]
    legacy = data()
    for r in legacy["throughput"]["runs"]:
        if r["transport"] == "udp":
            del r["transport"]  # runs from before the transports: UDP
    assert report.cells(legacy) == cells


def test_stream_targets_and_tables_per_transport() -> None:
    found = {t["name"]: (t["value"], t["met"]) for t in streams.targets(data())}
    tcp = "stunnerd / coturn datagrams per CPU-second, TCP clients"
    tls = "stunnerd / coturn datagrams per CPU-second, TLS clients"
    assert found == {
        f"{tcp}, 100 B": ("0.80x", False),
        f"{tcp}, 1000 B": ("-", None),
        f"{tls}, 100 B": ("1.00x", True),
        f"{tls}, 1000 B": ("-", None),
    }
    titles = [t.title for t in streams.tables(data())]
    assert titles == [
        "Relayed datagrams per server CPU-second (both directions), TCP clients",
        "Run-to-run spread, and where the loss went (TCP clients)",
        "Relayed datagrams per server CPU-second (both directions), TLS clients",
        "Run-to-run spread, and where the loss went (TLS clients)",
    ]
    assert streams.targets({"throughput": {"runs": []}}) == []


def test_profile_tables_name_the_transport_load() -> None:
    profile = {
        "rate": 1000,
        "transports": {
            "tcp": {
                "load": "TCP client, 100 B, 1 allocation",
                "summary": {"samples": 10, "self": [{"function": "f", "samples": 10, "pct": 100}]},
                "perf": {"stunnerd": {"per_cpu_s": 100_000, "dso": [{"function": "k", "pct": 50}]}},
            }
        },
    }
    titles = [t.title for t in streams.profile_tables(profile)]
    assert "stunnerd, TCP client, 100 B, 1 allocation: CPU time by binary (perf)" in titles
    assert "stunnerd profile, TCP client, 100 B, 1 allocation: top by self time" in titles
    assert streams.markdown(profile).startswith(streams.WHERE_THE_TIME_GOES)


@needs_openssl
@pytest.mark.parametrize("path", stream_instructions.PATHS)
@pytest.mark.parametrize("alone", [False, True])
def test_instruction_count_harnesses_relay_every_frame(path: str, alone: bool) -> None:
    stream_instructions.run_path(path, 7, 100, 70, alone)  # asserts the count it relayed
