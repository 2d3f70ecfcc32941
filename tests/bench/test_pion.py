"""pion/turn as the bench's third server: the build step, the skip path, its command line, its
tables, and (when Go and Debian's pion sources are here) real traffic through the built server.

The build tests run a stand-in ``go`` (a shell script that records how it was called) because
what they check is the bench's own logic: the environment, the arguments, the cache. The real
build and the real relay are in the last tests, which skip with the reason when Go is missing.
"""

from __future__ import annotations

import shlex
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench import pionbuild, pionreport, report
from bench.pionserver import Pion
from bench.run import QUICK, Bench
from bench.servers import RELAY_PORTS, Credentials, binding_answered
from stunner.udp import SOCKET_BUFFER
from testkit.echo import EchoPeer
from testkit.ports import free_udp_block
from tests.bench.test_report import run
from tests.support import TurnClient, client_ssl_context, self_signed_cert

INSTALL = "apt-get install golang-go golang-github-pion-turn.v2-dev"


def fake_gocode(root: Path) -> Path:
    """A GOPATH tree holding what ``missing`` looks for: pion/turn v2's server.go."""
    turn = root / "src" / "github.com" / "pion" / "turn" / "v2"
    turn.mkdir(parents=True)
    (turn / "server.go").write_text("package turn\n")
    return root


def fake_go(directory: Path, log: Path, *, fail: str = "") -> str:
    """A ``go`` that prints a version, and for ``build`` logs its arguments and environment and
    writes the ``-o`` file (or prints ``fail`` to stderr and exits 1)."""
    script = directory / "go"
    build = (
        f'echo "{fail}" >&2; exit 1' if fail else 'printf "#!/bin/sh\\n" > "$out"; chmod +x "$out"'
    )
    script.write_text(
        f"""#!/bin/sh
PATH=/usr/bin:/bin
if [ "$1" = version ]; then echo "go version go1.19.8 linux/amd64"; exit 0; fi
echo "argv $*" >> {shlex.quote(str(log))}
echo "env GO111MODULE=$GO111MODULE GOPATH=$GOPATH GOFLAGS=[$GOFLAGS] CGO_ENABLED=$CGO_ENABLED \
GOPROXY=$GOPROXY GOCACHE=$GOCACHE" >> {shlex.quote(str(log))}
echo "cwd $(pwd)" >> {shlex.quote(str(log))}
while [ $# -gt 0 ]; do [ "$1" = -o ] && out="$2"; shift; done
{build}
"""
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


# the skip path and the build command


def test_without_go_the_line_says_what_to_install() -> None:
    assert pionbuild.missing(None) == f"pion/turn: go is not installed ({INSTALL}): skipped"


def test_without_pion_sources_the_line_names_the_directory(tmp_path: Path) -> None:
    assert pionbuild.missing("/usr/bin/go", tmp_path) == (
        f"pion/turn: no pion/turn v2 sources in {tmp_path / 'src'} ({INSTALL}): skipped"
    )
    assert pionbuild.missing("/usr/bin/go", fake_gocode(tmp_path)) == ""


def test_ensure_built_without_go_skips_and_writes_nothing(tmp_path: Path) -> None:
    said: list[str] = []
    build = pionbuild.ensure_built(
        tmp_path / "cache", which=lambda _: None, gocode=fake_gocode(tmp_path), say=said.append
    )
    assert build == pionbuild.Build(skipped=f"pion/turn: go is not installed ({INSTALL}): skipped")
    assert not (tmp_path / "cache").exists() and said == []


def test_build_env_is_gopath_mode_offline_without_cgo(tmp_path: Path) -> None:
    base = {"PATH": "/bin", "GOFLAGS": "-mod=vendor", "GO111MODULE": "on", "HOME": "/root"}
    env = pionbuild.build_env(Path("/usr/share/gocode"), tmp_path, base)
    assert env == {
        "PATH": "/bin",
        "HOME": "/root",
        "GO111MODULE": "off",
        "GOPATH": "/usr/share/gocode",
        "GOFLAGS": "",
        "GOPROXY": "off",
        "GOTOOLCHAIN": "local",
        "CGO_ENABLED": "0",
        "GOCACHE": str(tmp_path / "gocache"),
    }
    assert base["GOFLAGS"] == "-mod=vendor"  # the caller's mapping is left alone


def test_build_argv() -> None:
    out = Path("/cache/pion-bench-x")
    assert pionbuild.build_argv("/usr/bin/go", out) == [
        "/usr/bin/go", "build", "-trimpath", "-o", "/cache/pion-bench-x", ".",
    ]  # fmt: skip


def test_fingerprint_follows_main_go_the_go_version_and_pion_sources(tmp_path: Path) -> None:
    source = tmp_path / "pion"
    source.mkdir()
    (source / "main.go").write_text("package main\n")
    gocode = fake_gocode(tmp_path / "gocode")
    first = pionbuild.fingerprint("go1.19.8", source, gocode)
    assert pionbuild.fingerprint("go1.19.8", source, gocode) == first
    assert pionbuild.fingerprint("go1.19.9", source, gocode) != first
    (source / "main.go").write_text("package main // changed\n")
    second = pionbuild.fingerprint("go1.19.8", source, gocode)
    assert second != first
    (gocode / "src/github.com/pion/turn/v2/server.go").write_text("package turn // upgraded\n")
    assert pionbuild.fingerprint("go1.19.8", source, gocode) != second


def test_builds_once_then_takes_the_binary_from_the_cache(tmp_path: Path) -> None:
    log = tmp_path / "go.log"
    go = fake_go(tmp_path, log)
    gocode = fake_gocode(tmp_path / "gocode")
    cache = tmp_path / "cache"
    (cache).mkdir()
    (cache / "pion-bench-0123456789abcdef").write_text("an older build")
    said: list[str] = []

    first = pionbuild.ensure_built(cache, which=lambda _: go, gocode=gocode, say=said.append)

    key = pionbuild.fingerprint("go1.19.8", pionbuild.SOURCE, gocode)
    binary = cache / f"pion-bench-{key}"
    assert first == pionbuild.Build(binary, built=True)
    assert binary.is_file()
    assert sorted(p.name for p in cache.iterdir()) == [binary.name]  # the older one is gone
    argv, env, cwd = log.read_text().splitlines()
    assert argv.startswith("argv build -trimpath -o ") and argv.endswith(" .")
    assert f"/.pion-bench-{key}." in argv  # a temporary name, renamed once complete
    assert env == (
        f"env GO111MODULE=off GOPATH={gocode} GOFLAGS=[] CGO_ENABLED=0 GOPROXY=off "
        f"GOCACHE={cache / 'gocache'}"
    )
    assert cwd == f"cwd {pionbuild.SOURCE}"
    assert said == [f"pion/turn: building {binary} (go build in GOPATH mode on {gocode}, offline)"]

    again = pionbuild.ensure_built(cache, which=lambda _: go, gocode=gocode, say=said.append)
    assert again == pionbuild.Build(binary, built=False)
    assert len(log.read_text().splitlines()) == 3 and len(said) == 1  # no second build


def test_a_failed_build_is_one_line_and_leaves_no_binary(tmp_path: Path) -> None:
    go = fake_go(tmp_path, tmp_path / "go.log", fail="main.go:1:1: expected 'package'")
    cache = tmp_path / "cache"
    build = pionbuild.ensure_built(
        cache, which=lambda _: go, gocode=fake_gocode(tmp_path / "gocode"), say=lambda _: None
    )
    assert build == pionbuild.Build(
        skipped="pion/turn: go build failed (main.go:1:1: expected 'package'): skipped"
    )
    assert [p.name for p in cache.iterdir()] == []


def test_first_error_skips_the_package_header() -> None:
    output = "# command-line-arguments\n./main.go:3:2: undefined: x\n./main.go:4:2: y\n"
    assert pionbuild.first_error(output) == "./main.go:3:2: undefined: x"
    assert pionbuild.first_error("") == "no output"


def test_the_bench_notes_the_skip_and_carries_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    line = f"pion/turn: go is not installed ({INSTALL}): skipped"
    monkeypatch.setattr("bench.run.ensure_built", lambda *a, **k: pionbuild.Build(skipped=line))
    bench = Bench(QUICK, tmp_path, tmp_path)
    with bench.pion() as pion:
        assert pion is None
    with bench.pion() as pion:  # asked again: the same answer, noted once
        assert pion is None
    assert bench.data["notes"] == [line]
    assert bench.data["pion"] == {"binary": None, "built_s": None, "skipped": line}


# the server's command line


def test_pion_command_line(tmp_path: Path) -> None:
    creds = Credentials()
    pion = Pion(tmp_path, "127.0.0.15", creds, Path("/cache/pion-bench-x"))
    # TLS as for the other servers: the base class's self-signed certificate (openssl).
    assert (pion.tls_port is None) == (pion.cert is None)
    tls_args = []
    if pion.cert is not None:
        cert, key = (str(p) for p in pion.cert)
        tls_args = ["-tls-port", str(pion.tls_port), "-cert", cert, "-key", key]
    assert pion.command() == [
        "/cache/pion-bench-x",
        "-host", "127.0.0.15",
        "-port", str(pion.port),
        "-min-port", str(RELAY_PORTS[0]),
        "-max-port", str(RELAY_PORTS[1]),
        "-realm", "bench.stunner",
        "-user", "bench:bench-pass",
        "-log-level", "warn",
        "-gomaxprocs", "1",
        "-socket-buffer", str(SOCKET_BUFFER),
        *tls_args,
    ]  # fmt: skip
    tls = Pion(
        tmp_path, "127.0.0.15", creds, Path("/p"), gomaxprocs=2,
        tls=(Path("/c.pem"), Path("/k.pem")),
    )  # fmt: skip
    assert tls.tls_port is not None and tls.tls_port != tls.port
    argv = tls.command()
    assert argv[argv.index("-gomaxprocs") + 1] == "2"
    assert argv[-6:] == ["-tls-port", str(tls.tls_port), "-cert", "/c.pem", "-key", "/k.pem"]


# the report


def three_servers() -> dict[str, Any]:
    return {
        "pion": {"gomaxprocs": 1},
        "throughput": {
            "repeats": 1,
            "runs": [
                run("stunnerd", 100, 1, 60_000, 1.0),
                run("coturn", 100, 1, 60_000, 0.8),
                run("pion", 100, 1, 60_000, 1.2, sent=64_000),
                run("stunnerd", 1000, 1, 50_000, 1.0),
                run("coturn", 1000, 1, 50_000, 0.5),
            ],
        },
        "allocation_rate": {
            "stunnerd": {"completed": 10, "per_cpu_s": 4000.0, "per_wall_s": 1.0, "failed": 0},
            "coturn": {"completed": 10, "per_cpu_s": 5000.0, "per_wall_s": 1.0, "failed": 0},
            "pion": {"completed": 10, "per_cpu_s": 8000.0, "per_wall_s": 1.0, "failed": 0},
        },
    }


def test_pion_table_puts_the_three_servers_and_their_ratios_side_by_side() -> None:
    (table,) = pionreport.tables(three_servers())
    assert list(table.headers[:8]) == [
        "payload", "allocs", "stunnerd /CPU-s", "coturn /CPU-s", "pion /CPU-s",
        "stunnerd/coturn", "pion/coturn", "stunnerd/pion",
    ]  # fmt: skip
    assert [list(row) for row in table.rows] == [
        # 120,000 relayed: 1.0 s, 0.8 s and 1.2 s of CPU; pion lost 4,000 of 64,000 sent
        ["100 B", "1", "120,000", "150,000", "100,000", "0.80x", "0.67x", "1.20x",
         "60,000", "6.2%", "60%"],
        ["1000 B", "1", "100,000", "200,000", "-", "0.50x", "-", "-", "-", "-", "-"],
    ]  # fmt: skip
    assert "GOMAXPROCS=1" in table.note


def test_without_pion_runs_there_is_no_pion_table_and_the_old_ratio_note() -> None:
    data = three_servers()
    data["throughput"]["runs"] = [r for r in data["throughput"]["runs"] if r["server"] != "pion"]
    del data["allocation_rate"]["pion"]
    assert pionreport.tables(data) == []
    assert report.allocation_table(data).note == "stunnerd / coturn: 0.80x"


def test_pion_in_the_shared_tables() -> None:
    data = three_servers()
    assert report.allocation_table(data).note == (
        "stunnerd / coturn: 0.80x, pion / coturn: 1.60x, stunnerd / pion: 0.50x"
    )
    spread = [row[:6] for row in report.spread_table(data).rows]
    assert ["100 B", "1", "pion", "1", "100,000", "100,000"] in spread
    # the stunnerd/coturn ratio and the target ignore pion
    assert report.cells(data)[0]["ratio"] == pytest.approx(0.8)
    assert report.size_ratio(data, 100) == pytest.approx(0.8)
    assert "## pion/turn, the third server" in report.render_markdown(data)


# the real thing: Go, Debian's pion sources, the built server, real TURN clients


@pytest.fixture(scope="session")
def pion_binary() -> Path:
    why = pionbuild.missing(shutil.which("go"))
    if why:
        pytest.skip(why)
    build = pionbuild.ensure_built(say=lambda _: None)  # bench-results/pion/, shared with bench
    if build.binary is None:
        pytest.fail(build.skipped)
    return build.binary


@pytest.fixture
def pion(pion_binary: Path, tmp_path: Path) -> Iterator[Pion]:
    _, key = self_signed_cert(tmp_path)  # it writes cert.pem itself
    (tmp_path / "key.pem").write_bytes(key)
    first = free_udp_block(20, "127.0.0.1", first=47300)  # not the bench's range: other tests
    server = Pion(
        tmp_path, "127.0.0.1", Credentials(), pion_binary,
        tls=(tmp_path / "cert.pem", tmp_path / "key.pem"), relay_ports=(first, first + 19),
    )  # fmt: skip
    with server:
        yield server


def test_built_server_answers_a_binding_request(pion: Pion) -> None:
    assert binding_answered(pion.host, pion.port)
    assert "GOMAXPROCS 1" in pion.log_path.read_text()


@pytest.mark.parametrize("protocol", ["UDP", "TCP", "TLS"])
async def test_built_server_relays_every_datagram_both_ways(pion: Pion, protocol: str) -> None:
    peer = await EchoPeer.start("127.0.0.1")
    creds = Credentials()
    port = pion.tls_port if protocol == "TLS" else pion.port
    assert port is not None
    cert = (pion.workdir / "cert.pem").read_bytes()
    clients = [
        await TurnClient.connect(
            ("127.0.0.1", port), protocol, creds.user, creds.password, client_ssl_context(cert)
        )
        for _ in range(2)
    ]
    try:
        for client in clients:
            await client.send_and_wait(peer.address, 25, 100)
        counts = peer.counts()
        assert (counts.packets, counts.bytes) == (50, 5000)
        assert (counts.sent_packets, counts.sent_bytes) == (50, 5000)
        assert [len(c.received) for c in clients] == [25, 25]
        # each datagram came back once and whole; the first few may overtake each other (sent
        # as Send indications while aioice's ChannelBind is in flight)
        for client in clients:
            assert sorted(client.received) == [bytes([i]) * 100 for i in range(25)]
        assert len(peer.sources) == 2  # one relay address per allocation
    finally:
        for client in clients:
            await client.close()
        if peer.transport is not None:
            peer.transport.close()
    assert pion.proc is not None and pion.proc.poll() is None
