"""Local stacks for the benchmarks: started as subprocesses under /tmp/ddb-*, always stopped."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ddmail_common.client import ServiceClient
from ddmail_stack.layout import StackLayout

REPO = Path(__file__).resolve().parent.parent
ACCOUNT = "bench-account"
RECOVERY_SECRET = "bench-recovery-secret-" + "r" * 24
START_TIMEOUT = 180.0
STOP_TIMEOUT = 90.0


@dataclass
class Stack:
    layout: StackLayout
    proc: subprocess.Popen[bytes]

    @property
    def root(self) -> Path:
        return self.layout.root

    def client(self) -> ServiceClient:
        secret = (self.layout.secrets / "web.key").read_bytes().strip()
        return ServiceClient("web", secret, self.layout.socket("backend"), "backend")

    def new_mailbox(self, client: ServiceClient | None = None) -> tuple[str, str]:
        address = f"b{uuid.uuid4().hex[:12]}@ddmail.test"
        made = (client or self.client()).call(
            "POST", "/v1/mailboxes", {"account": ACCOUNT, "address": address}
        )
        return str(made["address"]), str(made["password"])

    def stored(self, address: str) -> list[Path]:
        """The messages of ADDRESS's INBOX (maildir new/ and cur/)."""
        local, domain = address.split("@")
        maildir = self.layout.mail_root / domain / local / "Maildir"
        files: list[Path] = []
        for sub in ("new", "cur"):
            with contextlib.suppress(FileNotFoundError):
                files += [e for e in (maildir / sub).iterdir() if e.is_file()]
        return files


def start(port_base: int, *, plain: bool, dns: str = "") -> Stack:
    """`ddmail stack up` (or the mail_crypt-off variant) in a fresh /tmp/ddb-* root; with DNS
    (IP:PORT) the stack resolves through that server (`--dns`)."""
    root = Path(tempfile.mkdtemp(prefix="ddb-", dir="/tmp"))
    if plain:
        command = [sys.executable, "-m", "benchmarks.plainstack"]
    else:
        command = [str(Path(sys.executable).parent / "ddmail"), "stack", "up"]
    out = (root / "stack-up.out").open("wb")
    options = ["--root", str(root), "--port-base", str(port_base)]
    if dns:
        options += ["--dns", dns]
    proc = subprocess.Popen(
        [*command, *options],
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=REPO,
        start_new_session=True,
    )
    out.close()
    stack = Stack(StackLayout(root=root, port_base=port_base, dns_server=dns), proc)
    deadline = time.monotonic() + START_TIMEOUT
    while not (root / "stack.json").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            output = (root / "stack-up.out").read_text(errors="replace")
            stop(stack, remove=False)
            raise RuntimeError(f"stack in {root} did not start (root kept):\n{output[-3000:]}")
        time.sleep(0.2)
    stack.client().call(
        "POST", "/v1/accounts/recovery-key", {"account": ACCOUNT, "secret": RECOVERY_SECRET}
    )
    return stack


def stop(stack: Stack, *, remove: bool = True) -> None:
    """SIGTERM to the stack (it stops its daemons); if it hangs, kill what it left behind."""
    proc = stack.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            for pid in _leftovers(stack.root):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
    if remove:
        shutil.rmtree(stack.root, ignore_errors=True)


def _leftovers(root: Path) -> Iterator[int]:
    """Daemons of ROOT still alive, by their pid files (checked against cmdline and cwd)."""
    pid_files = [
        *root.glob("run/*.pid"),
        root / "run" / "dovecot" / "master.pid",
        root / "spool" / "postfix" / "pid" / "master.pid",
    ]
    for pid_file in pid_files:
        try:
            pid = int(pid_file.read_text().split()[0])
            proc_dir = Path(f"/proc/{pid}")
            cmdline = (proc_dir / "cmdline").read_bytes().decode(errors="replace")
            cwd = os.readlink(proc_dir / "cwd")
        except (OSError, ValueError, IndexError):
            continue
        if str(root) in cmdline or cwd.startswith(str(root)):
            yield pid
