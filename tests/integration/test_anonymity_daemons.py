"""Tor and i2pd offline (issue 12), from the roles' templates: tor --verify-config; tor with
DisableNetwork 1 and i2pd inside a network namespace make their keys, and our addresses
(ddmail_common.anon_keys) are theirs, both for keys they made and for keys we made; keys
copied to a fresh directory (a restore) keep the addresses; and neither daemon listens
anywhere we did not configure. i2pd never runs outside `unshare --net` (it would fetch routers
from the Internet)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ddmail_common import anon_keys
from ddmail_stack import anonymity
from ddmail_stack.layout import StackLayout
from ddmail_stack.processes import spawn, stop
from ddmail_stack.templates import role_defaults, template_env

I2PD_CREATED = re.compile(r"New private keys file \S+ for (\S+\.b32\.i2p) created")
I2PD_LOADED = re.compile(r"Local address (\S+\.b32\.i2p) loaded")


@pytest.fixture
def layout() -> Iterator[StackLayout]:
    """A state root debian-tor and i2pd may enter (pytest's own tmp_path is root's alone)."""
    root = Path(tempfile.mkdtemp(prefix="ddmail-anon-"))
    root.chmod(0o755)
    for sub in ("log", "run"):
        (root / sub).mkdir()
    try:
        yield StackLayout(root=root, port_base=31000)
    finally:
        shutil.rmtree(root)


def verify(torrc: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["tor", "--defaults-torrc", os.devnull, "--verify-config", "-f", str(torrc)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def production_torrc(layout: StackLayout) -> Path:
    """The torrc as the role renders it with its defaults and site.yml's three services."""
    variables = {
        **role_defaults("tor"),
        "tor_service_ports": [
            {"virtual": 80, "target": "127.0.0.1:10180"},
            {"virtual": 143, "target": "127.0.0.1:10143"},
            {"virtual": 587, "target": "127.0.0.1:10588"},
        ],
    }
    torrc = layout.root / "production-torrc"
    torrc.write_text(template_env("tor").get_template("torrc.j2").render(variables))
    return torrc


def test_tor_verifies_the_rendered_torrc_and_refuses_a_broken_one(layout: StackLayout) -> None:
    for torrc in (production_torrc(layout), anonymity.render_tor_config(layout)):
        done = verify(torrc)
        assert done.returncode == 0 and "Configuration was valid" in done.stdout, done.stdout
        broken = torrc.with_name("broken-torrc")
        broken.write_text(torrc.read_text() + "HiddenServicePort 80 nowhere:http\n")
        assert verify(broken).returncode != 0


def test_the_torrc_offers_nothing_but_the_onion_service(layout: StackLayout) -> None:
    options = [line.split() for line in production_torrc(layout).read_text().splitlines()]
    options = [o for o in options if o and not o[0].startswith("#")]
    ports = {o[0]: o[1:] for o in options if o[0].endswith("Port") and o[0] != "HiddenServicePort"}
    assert ports == {p: ["0"] for p in ("SocksPort", "DNSPort", "TransPort", "NATDPort",
                                        "ControlPort", "ORPort", "DirPort")}  # fmt: skip
    assert ["ExitRelay", "0"] in options and ["ExitPolicy", "reject", "*:*"] in options
    assert ["SafeLogging", "1"] in options and ["Log", "notice", "syslog"] in options
    services = [o[1:] for o in options if o[0] == "HiddenServicePort"]
    assert services == [["80", "127.0.0.1:10180"], ["143", "127.0.0.1:10143"],
                        ["587", "127.0.0.1:10588"]]  # fmt: skip


def _start_tor(layout: StackLayout) -> subprocess.Popen[bytes]:
    torrc = anonymity.render_tor_config(layout)
    return spawn(anonymity.tor_argv(torrc), layout.log_dir / "tor.log")


def _wait(path: Path, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.stat().st_size):
        assert proc.poll() is None, f"exited with {proc.returncode}"
        assert time.monotonic() < deadline, f"no {path} within {timeout} s"
        time.sleep(0.05)


def test_tor_offline_writes_the_hostname_we_compute(layout: StackLayout) -> None:
    tor = _start_tor(layout)
    try:
        _wait(anonymity.onion_dir(layout) / "hostname", tor)
    finally:
        stop(tor)
    directory = anonymity.onion_dir(layout)
    ours = anon_keys.onion_address(
        anon_keys.tor_public_key((directory / "hs_ed25519_secret_key").read_bytes())
    )
    assert (directory / "hostname").read_text() == ours + "\n"
    assert "DisableNetwork is set" in (layout.log_dir / "tor.log").read_text()


def test_tor_takes_our_key_and_names_our_address(layout: StackLayout) -> None:
    directory = anonymity.onion_dir(layout)
    anonymity.render_tor_config(layout)  # the directory, tor's
    ours, _ = anon_keys.install_onion_keys(directory, None)
    for name in ("hostname", "hs_ed25519_public_key"):  # tor must derive them itself
        (directory / name).unlink()
    tor = _start_tor(layout)
    try:
        _wait(directory / "hostname", tor)
    finally:
        stop(tor)
    assert (directory / "hostname").read_text() == ours + "\n"


def _in_netns(script: str) -> subprocess.CompletedProcess[str]:
    """SCRIPT (sh) in a network namespace of its own: the daemons reach no network."""
    done = subprocess.run(
        ["unshare", "--net", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


def _i2pd_in_netns(layout: StackLayout, then: str = ":") -> str:
    """i2pd (the stack's configuration at log level info) in a network namespace of its own
    until its keys file exists, then the shell commands THEN there; its output and THEN's."""
    conf = anonymity.render_i2pd_config(layout)
    conf.write_text(conf.read_text().replace("loglevel = warn", "loglevel = info"))
    argv = " ".join(anonymity.i2pd_command(conf, anonymity.i2pd_dir(layout)))
    keys = anonymity.i2p_keys_file(layout)
    script = (
        f"{argv} > {layout.log_dir}/i2pd-test.log 2>&1 & pid=$!; "
        f"for i in $(seq 300); do [ -s {keys} ] && break; sleep 0.1; done; sleep 1; "
        f"{then}; kill $pid; wait $pid || true"
    )
    done = _in_netns(script)
    return (layout.log_dir / "i2pd-test.log").read_text() + done.stdout


def test_i2pd_in_a_netns_makes_the_destination_whose_b32_we_compute(
    layout: StackLayout,
) -> None:
    log = _i2pd_in_netns(layout)
    logged = I2PD_CREATED.findall(log)
    keys = anonymity.i2p_keys_file(layout).read_bytes()
    assert logged == [anon_keys.check_i2p_keys(keys)], log[-3000:]
    # One keys file, so one destination for the three tunnels.
    assert "3 I2P server tunnels created" in log and "0 I2P client tunnels created" in log


def test_i2pd_takes_our_keys_and_names_our_address(layout: StackLayout) -> None:
    anonymity.render_i2pd_config(layout)  # the data directory, i2pd's
    ours, _ = anon_keys.install_i2p_keys(anonymity.i2p_keys_file(layout), None)
    log = _i2pd_in_netns(layout)
    assert I2PD_LOADED.findall(log) == [ours], log[-3000:]
    assert not I2PD_CREATED.search(log)


def test_keys_restored_into_a_fresh_directory_keep_the_addresses(layout: StackLayout) -> None:
    procs = anonymity.start_anonymity(layout)
    try:
        before = anonymity.addresses(layout, procs)
    finally:
        for proc in procs.values():
            stop(proc)
    fresh = StackLayout(root=layout.root / "restored", port_base=layout.port_base)
    for sub in (fresh.log_dir, fresh.run):
        sub.mkdir(parents=True)
    fresh.root.chmod(0o755)
    anonymity.render_tor_config(fresh)
    anonymity.render_i2pd_config(fresh)
    # What a restore puts back: the onion service's directory and the I2P keys file, with
    # their owners and modes.
    source = anonymity.onion_dir(layout)
    for name in ("hs_ed25519_secret_key", "hs_ed25519_public_key", "hostname"):
        shutil.copy2(source / name, anonymity.onion_dir(fresh) / name)
        st = (source / name).stat()
        os.chown(anonymity.onion_dir(fresh) / name, st.st_uid, st.st_gid)
    shutil.copy2(anonymity.i2p_keys_file(layout), anonymity.i2p_keys_file(fresh))
    st = anonymity.i2p_keys_file(layout).stat()
    os.chown(anonymity.i2p_keys_file(fresh), st.st_uid, st.st_gid)
    procs = anonymity.start_anonymity(fresh)
    try:
        assert anonymity.addresses(fresh, procs) == before
        time.sleep(1)  # had either daemon made new keys, it would have by now
        assert anonymity.addresses(fresh, procs) == before
    finally:
        for proc in procs.values():
            stop(proc)
    assert (anonymity.onion_dir(fresh) / "hs_ed25519_secret_key").read_bytes() == (
        source / "hs_ed25519_secret_key"
    ).read_bytes()


def _listeners(ss_output: str) -> list[tuple[str, str]]:
    """(protocol, local address:port) of each socket `ss -ltunH` lists."""
    return [(line.split()[0], line.split()[4]) for line in ss_output.splitlines() if line]


def test_i2pd_listens_on_no_tcp_port_and_only_its_transport_udp_port(
    layout: StackLayout,
) -> None:
    log = _i2pd_in_netns(layout, then="echo ---; ss -ltunH")
    listeners = _listeners(log.split("---\n", 1)[1])
    # No console, proxy, SAM, BOB, I2CP or I2PControl port; NTCP2 only connects out.
    assert all(proto == "udp" for proto, _ in listeners), listeners
    # SSU2, the router's one transport port (IPv4 only).
    assert len({address for _, address in listeners}) == 1, listeners
    assert all(address.startswith("0.0.0.0:") for _, address in listeners), listeners


def test_tor_with_the_production_torrc_listens_nowhere(layout: StackLayout) -> None:
    """The production torrc (network enabled, as on the host) in a namespace with no way out:
    no SOCKS, DNS, control or relay port, only outgoing attempts."""
    torrc = production_torrc(layout)
    data = layout.root / "tor-data"
    anonymity.render_tor_config(layout)  # tor's account owns what it writes below
    for directory in (data, data / "onion"):
        directory.mkdir(mode=0o700)
        shutil.chown(directory, anonymity.TOR_USER, anonymity.TOR_USER)
    text = torrc.read_text()
    text = text.replace("DataDirectory /var/lib/tor", f"DataDirectory {data}")
    text = text.replace("HiddenServiceDir /var/lib/tor/ddmail", f"HiddenServiceDir {data}/onion")
    text = text.replace("PidFile /run/tor/tor.pid", f"PidFile {data}/tor.pid")
    text = text.replace("Log notice syslog", "Log notice stderr")
    assert "DisableNetwork 0" in text
    torrc.write_text(text)
    hostname = data / "onion" / "hostname"
    script = (
        f"tor --defaults-torrc /dev/null -f {torrc} --RunAsDaemon 0 "
        f"> {layout.log_dir}/tor-netns.log 2>&1 & pid=$!; "
        f"for i in $(seq 300); do [ -s {hostname} ] && break; sleep 0.1; done; sleep 2; "
        "echo ---; ss -ltunH; kill $pid; wait $pid || true"
    )
    done = _in_netns(script)
    assert hostname.exists(), (layout.log_dir / "tor-netns.log").read_text()[-2000:]
    assert _listeners(done.stdout.split("---\n", 1)[1]) == []
