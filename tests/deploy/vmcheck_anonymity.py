"""Checks of the onion service and the I2P destination (roles tor and i2pd, issue 12), run
INSIDE the booted deployment VM by vmcheck.py. Standard library only, like vmcheck.py.

What they show: tor@default and i2pd run, each confined by Debian's AppArmor profile in enforce
mode; the keys the playbook made exist with their accounts' owners and modes; the address
ddmail-anon-keys (the roles' program) computes from them is the one tor wrote into its
hostname file and the one i2pd named its destination by (destinations/<b32>.*.dat), and the
one ddmail.toml publishes; and after the backup's wipe and restore (vmcheck.py), the restored
keys give the same addresses and both daemons run on them again. The VM is offline: neither
network is reached, only the daemons' own view of their keys."""

from __future__ import annotations

import http.client
import imaplib
import json
import pwd
import smtplib
import stat
import time
import tomllib
from pathlib import Path

# unit -> the label its main process must carry (/proc/PID/attr/current): Debian's profiles.
# Shipped next to this file in the VM (/ci/tests/).
from tests.vmcheck_resolver import run, units_confined

ANONYMITY_UNITS = {
    "tor@default.service": "system_tor (enforce)",
    "i2pd.service": "i2pd (enforce)",
}
ANON_KEYS = "/usr/local/sbin/ddmail-anon-keys"
ONION_DIR = Path("/var/lib/tor/ddmail")
I2P_KEYS = Path("/var/lib/i2pd/ddmail.dat")
I2PD_DESTINATIONS = Path("/var/lib/i2pd/destinations")
CONFIG = Path("/etc/ddmail/ddmail.toml")
# What tor and i2pd forward to (site.yml's ddmail_anon_address and ddmail_anon_*_port).
ANON_HOST = "127.0.0.1"
ANON_HTTP, ANON_IMAP, ANON_SUBMISSION = 10180, 10143, 10588


def owner_and_mode(path: Path) -> str:
    st = path.stat()
    return f"{pwd.getpwuid(st.st_uid).pw_name} {stat.S_IMODE(st.st_mode):o}"


def computed(command: str, path: Path) -> str:
    """The address ddmail-anon-keys computes from the keys at PATH (with the host's python3,
    as the roles run it)."""
    address: str = json.loads(run("/usr/bin/python3", ANON_KEYS, command, str(path)).stdout)[
        "address"
    ]
    return address


class Anonymity:
    """The checks, in the order vmcheck.py runs them."""

    def __init__(self) -> None:
        self.onion = ""
        self.i2p = ""

    def confined(self) -> str:
        return units_confined(ANONYMITY_UNITS)

    def keys(self) -> str:
        modes = self._modes()
        self.onion, self.i2p = self._addresses()
        public = tomllib.loads(CONFIG.read_text()).get("public", {})
        for key, ours in (("onion_hostname", self.onion), ("i2p_hostname", self.i2p)):
            assert public.get(key, ours) == ours, (key, public.get(key), ours)
        return f"{self.onion} {self.i2p}; {modes}"

    def _modes(self) -> str:
        secret = ("hs_ed25519_secret_key", "hs_ed25519_public_key", "hostname")
        modes = {
            str(ONION_DIR): owner_and_mode(ONION_DIR),
            **{str(ONION_DIR / name): owner_and_mode(ONION_DIR / name) for name in secret},
            str(I2P_KEYS): owner_and_mode(I2P_KEYS),
        }
        assert modes == {
            str(ONION_DIR): "debian-tor 700",
            **{str(ONION_DIR / name): "debian-tor 600" for name in secret},
            str(I2P_KEYS): "i2pd 600",
        }, modes
        return json.dumps(modes)

    def _addresses(self) -> tuple[str, str]:
        """Ours, each checked against what the daemon itself says."""
        onion = computed("onion-address", ONION_DIR)
        hostname = (ONION_DIR / "hostname").read_text().strip()
        assert hostname == onion, (hostname, onion)
        i2p = computed("i2p-address", I2P_KEYS)
        # i2pd keeps its destination's lease set keys under the destination's own b32 name.
        deadline = time.monotonic() + 60
        while True:
            named = sorted(p.name for p in I2PD_DESTINATIONS.glob("*.dat"))
            if any(n.startswith(i2p.removesuffix(".b32.i2p") + ".") for n in named):
                break
            assert time.monotonic() < deadline, (i2p, named)
            time.sleep(1)
        return onion, i2p

    def listeners(self, address: str, password: str) -> str:
        """What the onion service and the I2P tunnels forward to answers: the panel over plain
        HTTP for the onion name (no HSTS, the page names the onion), IMAP LOGIN and submission
        AUTH without TLS with the smoke test's mailbox."""
        assert self.onion, "the keys check did not run"
        conn = http.client.HTTPConnection(ANON_HOST, ANON_HTTP, timeout=30)
        try:
            conn.request("GET", "/help", headers={"Host": self.onion})
            answer = conn.getresponse()
            page = answer.read().decode()
        finally:
            conn.close()
        assert answer.status == 200, answer.status
        assert answer.getheader("Strict-Transport-Security") is None
        assert f"http://{self.onion}/" in page
        with imaplib.IMAP4(ANON_HOST, ANON_IMAP, timeout=30) as imap:
            assert "LOGINDISABLED" not in imap.capabilities, imap.capabilities
            assert imap.login(address, password)[0] == "OK"
        with smtplib.SMTP(ANON_HOST, ANON_SUBMISSION, timeout=30) as smtp:
            smtp.ehlo("client.invalid")
            assert not smtp.has_extn("starttls")
            assert smtp.login(address, password)[0] == 235
        return f"http {answer.status}, imap and submission logins on {ANON_IMAP}, {ANON_SUBMISSION}"

    def restored(self) -> str:
        """After vmcheck.py's wipe and restore (tor and i2pd stopped, started again): the
        restored keys have their owners and modes and give the same addresses, and both
        daemons run on them, confined."""
        assert self.onion and self.i2p, "the keys check did not run"
        self.confined()
        self._modes()
        again = self._addresses()
        assert again == (self.onion, self.i2p), (again, self.onion, self.i2p)
        return f"{again[0]} {again[1]}"
