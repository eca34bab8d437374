"""Where and how the console is served: HTTPS with the site's certificate, and a port already taken."""

from __future__ import annotations

import socket
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest

from station.config import WebSection
from station.console.server import ConsoleError, bind
from tests.console.conftest import csrf_of, descendants, running_station, stop_station, wait_until


def test_a_port_in_use_stops_a_real_station_with_the_address_and_the_simulated_lane_takes_another() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(ConsoleError, match=rf"\[web\] 127.0.0.1:{port}: cannot listen"):
            bind(WebSection(port=port))
        with bind(WebSection(port=port), any_port=True) as other:
            assert other.getsockname()[1] not in (port, 0)


@pytest.mark.slow
def test_the_console_over_https_with_the_sites_certificate(tmp_path: Path) -> None:
    cert, key = tmp_path / "console.pem", tmp_path / "console.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=lane-1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    with running_station(tmp_path, web={"tls_cert": str(cert), "tls_key": str(key)}) as station:
        assert station.url.startswith("https://127.0.0.1:")
        site_ca = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=station.url, verify=site_ca, follow_redirects=False) as client:
            page = client.get("/login")
            assert page.status_code == 200
            done = client.post("/login", data={"name": "alice", "password": "mint-tea-0001",
                                               "csrf": csrf_of(page.text)})
            assert done.status_code == 303 and "secure" in done.headers["set-cookie"].lower()
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(station.url + "/login")  # the system's CAs do not know the site's certificate
        with pytest.raises(httpx.HTTPError):
            httpx.get(station.url.replace("https", "http") + "/login")  # no plain HTTP beside it
        assert stop_station(station) == 0


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_a_killed_station_leaves_no_render_worker_behind(tmp_path: Path) -> None:
    """kill -9 of the daemon: its render worker and fork server end too, not wait on a queue for ever."""
    with running_station(tmp_path) as station:
        def console_processes() -> set[int]:
            return {p for p in descendants(station.process.pid)
                    if b"forkserver" in Path(f"/proc/{p}/cmdline").read_bytes()}
        wait_until("the render worker and its fork server", lambda: len(console_processes()) >= 2, 30)
        workers = console_processes()
        station.process.kill()
        station.process.wait(timeout=10)
        wait_until("the console's processes gone with the station", lambda: not any(alive(p) for p in workers), 10)
