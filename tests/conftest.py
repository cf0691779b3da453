"""One real stack per test session, shared by the integration and end-to-end tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.authdns import AuthDns
from tests.stackrun import (
    VENV_BIN,
    RunningStack,
    start_stack,
    stop_stack_proc,
    unexpected_log_errors,
)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    # The stack resolves through a real authoritative server on loopback (NSD) whose zones the
    # tests publish: senders' SPF/DKIM/DMARC, customer domains' proofs, the operator's zone.
    dns = AuthDns(tmp_path_factory.mktemp("authdns"))
    dns.start()
    try:
        running = start_stack(dns)
    except BaseException:
        dns.stop()
        raise
    yield running
    # `ddmail stack down` is what an operator runs; it must stop everything the stack started.
    subprocess.run(
        [str(VENV_BIN / "ddmail"), "stack", "down", "--root", str(running.root)],
        check=True,
        timeout=90,
    )
    assert running.proc.wait(30) == 0
    stop_stack_proc(running.proc)
    dns.stop()
    # After every test of the session and the shutdown: no daemon or service logged an error
    # that no deliberate fault explains (an operator must be able to trust "Error:").
    errors = unexpected_log_errors(running.log_dir, running.expected_log_errors)
    assert not errors, "unexpected errors in the stack's logs:\n" + "\n".join(errors[:20])
    if not os.environ.get("DDMAIL_KEEP_ROOT"):  # keep it to read the logs of a failed run
        shutil.rmtree(running.root, ignore_errors=True)
