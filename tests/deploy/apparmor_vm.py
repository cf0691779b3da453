"""A small QEMU (TCG) VM with a real kernel, systemd and AppArmor, to check DDMail's profiles
(apparmor/) against what the processes really do, without a full deployment.

    sudo .venv/bin/python tests/deploy/apparmor_vm.py [WORKDIR]

Builds (and caches) a Debian 12 rootfs with mmdebstrap, installs this checkout into
/opt/ddmail/venv from a wheel (dependencies from the package registry, pinned by the wheel),
copies the profiles to /etc/apparmor.d, boots it with a one-shot unit that runs
apparmor_vm_check.py and powers off, and reads /ci/result.json back with debugfs. Needs root,
mmdebstrap, qemu-system-x86 and e2fsprogs. 5-8 minutes on 2 shared cores (the rootfs is cached).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PACKAGES = (
    "python3,python3-venv,systemd,systemd-sysv,dbus,udev,iproute2,linux-image-cloud-amd64,"
    "initramfs-tools,apparmor,apparmor-utils,gnupg,nginx-light,postfix,dovecot-core,dovecot-imapd"
)
DEFAULT_WORKDIR = Path("/var/tmp/ddmail-apparmor")
BOOT_TIMEOUT = 900  # seconds; TCG on 2 shared cores

CI_UNIT = """[Unit]
Description=DDMail AppArmor check
After=multi-user.target apparmor.service
[Service]
Type=oneshot
ExecStart=/bin/sh -c '/opt/ddmail/venv/bin/python3 /ci/check.py > /ci/check.log 2>&1'
ExecStopPost=/bin/sh -c 'sync; systemctl poweroff --no-block'
[Install]
WantedBy=multi-user.target
"""

VENV_SCRIPT = """set -e
mount -t proc proc "$1/proc"
mount --rbind /dev "$1/dev"
chroot "$1" python3 -m venv /opt/ddmail/venv
chroot "$1" /opt/ddmail/venv/bin/pip install -q --no-index --find-links /tmp/wheels ddmail
rm -r "$1/tmp/wheels"
"""


def sh(*cmd: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], check=True, text=True, **kwargs)


def base_rootfs(workdir: Path) -> Path:
    """The Debian rootfs, built once per package list (mmdebstrap, about 90 s)."""
    key = hashlib.sha256(PACKAGES.encode()).hexdigest()[:12]
    base = workdir / f"rootfs-base-{key}"
    if not (base / "usr" / "bin" / "python3").exists():
        shutil.rmtree(base, ignore_errors=True)
        sh(
            "mmdebstrap",
            "--variant=apt",
            "--skip=cleanup/apt/lists",
            f"--include={PACKAGES}",
            "bookworm",
            base,
            stdout=subprocess.DEVNULL,
        )
    return base


def wheelhouse(workdir: Path) -> Path:
    """This checkout as a wheel plus its pinned dependencies, fetched on the host."""
    wheels = workdir / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    sh("/usr/bin/python3", "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, REPO)
    own = next(wheels.glob("ddmail-*.whl"))
    sh("/usr/bin/python3", "-m", "pip", "download", "-q", "-d", wheels, own)
    return wheels


def prepare(workdir: Path) -> Path:
    root = workdir / "rootfs"
    shutil.rmtree(root, ignore_errors=True)
    sh("cp", "-a", base_rootfs(workdir), root)
    shutil.copytree(wheelhouse(workdir), root / "tmp" / "wheels")
    shutil.copy(Path("/etc/resolv.conf").resolve(), root / "etc" / "resolv.conf")
    sh("unshare", "--mount", "--propagation", "private", "sh", "-c", VENV_SCRIPT, "venv", root)
    # The profiles, as the Ansible role installs them.
    profiles = REPO / "apparmor"
    for item in profiles.iterdir():
        if item.is_file():
            shutil.copy(item, root / "etc" / "apparmor.d" / item.name)
    for item in (profiles / "abstractions").iterdir():
        shutil.copy(item, root / "etc" / "apparmor.d" / "abstractions" / item.name)
    ci = root / "ci"
    ci.mkdir()
    shutil.copy(Path(__file__).with_name("apparmor_vm_check.py"), ci / "check.py")
    units = root / "etc" / "systemd" / "system"
    (units / "ddmail-ci.service").write_text(CI_UNIT)
    (units / "multi-user.target.wants").mkdir(exist_ok=True)
    (units / "multi-user.target.wants" / "ddmail-ci.service").symlink_to(
        "/etc/systemd/system/ddmail-ci.service"
    )
    # The serial getty hangs up the console; the packaged daemons are not what is tested here.
    for unit in (
        "serial-getty@ttyS0.service",
        "postfix.service",
        "dovecot.service",
        "nginx.service",
    ):
        (units / unit).unlink(missing_ok=True)
        (units / unit).symlink_to("/dev/null")
    (root / "etc" / "hostname").write_text("ddmail-aa\n")
    (root / "etc" / "hosts").write_text("127.0.0.1 localhost\n127.0.1.1 ddmail-aa\n")
    return root


def boot(workdir: Path, root: Path) -> dict[str, Any]:
    image = workdir / "rootfs.img"
    image.unlink(missing_ok=True)
    sh("mke2fs", "-q", "-t", "ext4", "-d", root, image, "3G")
    kernel = next((root / "boot").glob("vmlinuz-*"))
    initrd = next((root / "boot").glob("initrd.img-*"))
    serial = workdir / "serial.log"
    subprocess.run(
        [
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
            "root=/dev/vda rw console=ttyS0 edd=off quiet",
            "-drive",
            f"file={image},format=raw,if=virtio",
            "-nic",
            "none",
            "-display",
            "none",
            "-serial",
            f"file:{serial}",
            "-no-reboot",
        ],
        check=True,
        timeout=BOOT_TIMEOUT,
    )
    out = subprocess.run(
        ["debugfs", "-R", "cat /ci/result.json", str(image)], capture_output=True, text=True
    )
    if not out.stdout.strip():
        log = subprocess.run(
            ["debugfs", "-R", "cat /ci/check.log", str(image)], capture_output=True, text=True
        )
        raise RuntimeError(
            f"no result from the VM; check.log:\n{log.stdout}\n{serial.read_text()[-4000:]}"
        )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def run_vm(workdir: Path = DEFAULT_WORKDIR) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    return boot(workdir, prepare(workdir))


def main() -> int:
    workdir = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_WORKDIR
    result = run_vm(workdir)
    failed = [c for c in result["checks"] if not c["ok"]]
    for c in result["checks"]:
        print(
            ("ok   " if c["ok"] else "FAIL ")
            + c["name"]
            + ("" if c["ok"] else f"\n     {c['detail']}")
        )
    print(f"{len(result['denied'])} DENIED lines in the kernel log")
    for line in result["denied"]:
        print("  " + line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
