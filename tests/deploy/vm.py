"""Boot a Debian rootfs for real: QEMU with software emulation (TCG), the rootfs's own kernel,
systemd as PID 1 and AppArmor in the kernel, which this host has neither of.

The rootfs directory is never changed: it is hard-link copied (directories new, files shared),
our files are only ever added to the copy (never written through a shared inode), and the copy
becomes an ext4 image with `mke2fs -d`. A oneshot `ddmail-ci.service` runs the in-VM check
script after boot, exports the journal and powers the VM off; the result file and the journal
are read back out of the image with `debugfs`, so nothing is mounted on the host."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Inside the VM: the check script, its settings, its result and the journal export.
CI_DIR = "/ci"
RESULT = f"{CI_DIR}/result.json"
JOURNAL = f"{CI_DIR}/journal.txt"

CI_UNIT = f"""\
[Unit]
Description=DDMail CI: check the booted deployment, then power off
After=multi-user.target
# Whatever the outcome, the VM powers off: the host waits for QEMU to exit.
SuccessAction=poweroff-force
FailureAction=poweroff-force
# The checks need no network beyond loopback; the VM has no network card either.

[Service]
Type=oneshot
ExecStart=/usr/bin/python3 {CI_DIR}/vmcheck.py {CI_DIR}/config.json {RESULT}
# The deployment keeps its journal in memory (journald Storage=volatile): copy it to the disk
# before power-off so the host can read it for diagnostics, whatever the checks' outcome.
ExecStopPost=/bin/sh -c 'journalctl -b --no-pager -o short-precise > {JOURNAL} 2>&1; sync'
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec={{timeout}}

[Install]
WantedBy=multi-user.target
"""


@dataclass(frozen=True)
class VmRun:
    """What came back from one boot."""

    result: dict[str, Any] | None  # the check script's JSON, None if it never wrote one
    journal: str  # the VM's journal as text ("" if the CI unit never got to export it)
    serial: str  # the console: kernel, systemd and the check script's progress
    timed_out: bool
    seconds: float

    def diagnostics(self, tail: int = 150) -> str:
        """The end of the journal (or of the console if there is no journal), for a failure."""
        text = self.journal or self.serial
        lines = text.splitlines()[-tail:]
        return "\n".join(lines)


def _kernel_and_initrd(rootfs: Path) -> tuple[Path, Path]:
    kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise FileNotFoundError(f"no kernel in {rootfs}/boot (linux-image-cloud-amd64 missing?)")
    kernel = kernels[-1]
    initrd = rootfs / "boot" / kernel.name.replace("vmlinuz-", "initrd.img-")
    if not initrd.exists():
        raise FileNotFoundError(f"no {initrd.name} in {rootfs}/boot (initramfs-tools missing?)")
    return kernel, initrd


def _add(root: Path, rel: str, data: bytes, mode: int = 0o644) -> None:
    """Put DATA at ROOT/REL as a new inode: a hard-linked file is replaced, never written into
    (that would change the fixture's rootfs)."""
    path = root / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        path.unlink()
    path.write_bytes(data)
    path.chmod(mode)


def _symlink(root: Path, rel: str, target: str) -> None:
    path = root / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        path.unlink()
    path.symlink_to(target)


def _tree_bytes(root: Path) -> int:
    out = subprocess.run(
        ["du", "-sb", "--apparent-size", str(root)], capture_output=True, text=True, check=True
    )
    return int(out.stdout.split()[0])


def build_image(
    rootfs: Path, work: Path, files: Mapping[str, bytes], timeout_s: int
) -> tuple[Path, Path, Path]:
    """An ext4 image of ROOTFS plus FILES (path in the VM -> content) and the CI unit;
    returns (image, kernel, initrd). The VM's disk has room for the database, mail and backups
    the checks create."""
    kernel, initrd = _kernel_and_initrd(rootfs)
    copy = work / "rootfs"
    if copy.exists():
        shutil.rmtree(copy)
    subprocess.run(["cp", "-al", str(rootfs), str(copy)], check=True)
    try:
        for rel, data in files.items():
            runnable = rel.endswith((".py", ".sh")) or data.startswith(b"\x7fELF")
            # Ours under /ci are root's alone (a secret key is among them); what goes into the
            # system is read by its daemons, as a package's files are.
            private = rel.startswith(f"{CI_DIR}/")
            _add(copy, rel, data, 0o700 if runnable else 0o600 if private else 0o644)
        _add(
            copy,
            "/etc/systemd/system/ddmail-ci.service",
            CI_UNIT.format(timeout=timeout_s).encode(),
        )
        _symlink(
            copy,
            "/etc/systemd/system/multi-user.target.wants/ddmail-ci.service",
            "/etc/systemd/system/ddmail-ci.service",
        )
        # The login prompt on the serial console hangs up the console the CI unit reports to.
        _symlink(copy, "/etc/systemd/system/serial-getty@ttyS0.service", "/dev/null")
        image = work / "rootfs.img"
        image.unlink(missing_ok=True)
        size_mb = _tree_bytes(copy) // 2**20 + 3072  # sparse: only what is written takes space
        mke2fs = ["mke2fs", "-q", "-F", "-t", "ext4", "-L", "ddmail-ci", "-d", str(copy)]
        subprocess.run(
            [*mke2fs, str(image), f"{size_mb}M"],
            check=True,
            capture_output=True,
        )
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    return image, kernel, initrd


def qemu_command(image: Path, kernel: Path, initrd: Path, serial: Path) -> list[str]:
    """TCG, not KVM: on these hosts KVM guests hang or fail emulation (ops notes §0)."""
    return [
        "qemu-system-x86_64",
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        "max",
        "-m",
        "2048",
        "-smp",
        "2",
        "-kernel",
        str(kernel),
        "-initrd",
        str(initrd),
        "-append",
        "root=/dev/vda rw console=ttyS0 edd=off",
        "-drive",
        f"file={image},format=raw,if=virtio",
        "-nic",
        "none",
        "-display",
        "none",
        "-serial",
        f"file:{serial}",
        "-no-reboot",
    ]


def read_from_image(image: Path, path: str) -> bytes | None:
    """A file's content from the (powered-off) image; None if it does not exist there."""
    out = subprocess.run(
        ["debugfs", "-R", f"cat {path}", str(image)], capture_output=True, check=False
    )
    # debugfs prints its errors on stderr and exits 0; an absent file gives empty stdout.
    if out.returncode != 0 or (not out.stdout and b"not found" in out.stderr):
        return None
    return out.stdout


def boot(rootfs: Path, work: Path, files: Mapping[str, bytes], timeout_s: int = 540) -> VmRun:
    """Boot ROOTFS with FILES added and the CI unit enabled; wait for the VM to power itself
    off (at most TIMEOUT_S) and bring back the result, the journal and the console."""
    work.mkdir(parents=True, exist_ok=True)
    # The unit's own limit is a little shorter, so the journal is exported before we kill QEMU.
    image, kernel, initrd = build_image(rootfs, work, files, max(timeout_s - 60, 60))
    serial = work / "serial.log"
    serial.unlink(missing_ok=True)
    started = time.monotonic()
    timed_out = False
    with subprocess.Popen(
        qemu_command(image, kernel, initrd, serial),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    ) as proc:
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.kill()
            proc.wait()
    seconds = time.monotonic() - started
    raw = read_from_image(image, RESULT)
    result: dict[str, Any] | None = None
    if raw:
        try:
            result = json.loads(raw)
        except ValueError:
            result = {"unreadable": raw.decode("utf-8", "replace")[-2000:]}
    journal = (read_from_image(image, JOURNAL) or b"").decode("utf-8", "replace")
    console = serial.read_text("utf-8", "replace") if serial.exists() else ""
    if not os.environ.get("DDMAIL_KEEP_VM"):  # keep it to look inside a failed run
        image.unlink(missing_ok=True)
    return VmRun(result, journal, console, timed_out, seconds)
