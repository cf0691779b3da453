"""A real authoritative DNS server (NSD) on a loopback port for tests: the zones a test
publishes are what the stack's backend and rspamd resolve (`ddmail stack up --dns`), as the
Internet's DNS would answer them. NSD answers REFUSED for every other name, at once."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode

HOST = "127.0.0.1"
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def free_port() -> int:
    """A port free for both UDP and TCP on loopback (NSD serves both)."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((HOST, 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((HOST, port))
                except OSError:
                    continue
                return int(port)
    raise RuntimeError("no free loopback port")


class AuthDns:
    """NSD serving the zones in DIR. `publish` writes a zone and restarts NSD (NSD learns new
    zones only from its config); a restart takes a fraction of a second."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("nsd", path=SEARCH_PATH)
        if binary is None:
            raise RuntimeError("nsd not found: ./dev installs the Debian package 'nsd'")
        self.binary = binary
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.zones: dict[str, str] = {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def publish(self, zone: str, records: str, ttl: int = 60) -> None:
        """Serve ZONE with RECORDS (zone-file lines, names absolute or relative to ZONE)."""
        zone = zone.rstrip(".").lower()
        text = (
            f"$ORIGIN {zone}.\n$TTL {ttl}\n"
            f"@ IN SOA ns1.{zone}. hostmaster.{zone}. {int(time.time())} 3600 600 86400 {ttl}\n"
            f"@ IN NS ns1.{zone}.\nns1 IN A {HOST}\n{records}\n"
        )
        self.publish_zone_file(zone, text)

    def publish_zone_file(self, zone: str, text: str) -> None:
        """Serve ZONE from the complete zone file TEXT (e.g. a DNSSEC-signed one)."""
        zone = zone.rstrip(".").lower()
        (self.dir / f"{zone}.zone").write_text(text)
        self.zones[zone] = text
        self.restart()

    def _config(self) -> str:
        zones = "".join(
            f'zone:\n  name: "{zone}"\n  zonefile: "{self.dir / zone}.zone"\n'
            for zone in self.zones
        )
        return f"""server:
  ip-address: {HOST}@{self.port}
  port: {self.port}
  do-ip4: yes
  do-ip6: no
  server-count: 1
  username: ""
  chroot: ""
  zonesdir: "{self.dir}"
  database: ""
  zonelistfile: "{self.dir}/zone.list"
  xfrdfile: "{self.dir}/xfrd.state"
  xfrdir: "{self.dir}"
  pidfile: "{self.dir}/nsd.pid"
  logfile: "{self.dir}/nsd.log"
  verbosity: 1
remote-control:
  control-enable: no
{zones}"""

    def start(self) -> None:
        conf = self.dir / "nsd.conf"
        conf.write_text(self._config())
        self.proc = subprocess.Popen(
            [self.binary, "-d", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10.0
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = self.dir / "nsd.log"
                detail = log.read_text() if log.exists() else "(no log)"
                raise RuntimeError(f"nsd did not come up on {self.address}: {detail}")
            time.sleep(0.05)

    def _answers(self) -> bool:
        """Up, and serving every zone published so far."""
        for zone in self.zones or {"invalid": ""}:
            query = dns.message.make_query(zone, "SOA")
            try:
                response = dns.query.udp(query, HOST, port=self.port, timeout=0.2)
            except (dns.exception.DNSException, OSError):
                return False
            if self.zones and not (response.rcode() == dns.rcode.NOERROR and response.answer):
                return False
        return True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()
