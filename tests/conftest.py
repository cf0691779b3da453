"""One real stack per test session, shared by the integration and end-to-end tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.stackrun import VENV_BIN, RunningStack, start_stack, stop_stack_proc


@pytest.fixture(scope="session")
def stack() -> Iterator[RunningStack]:
    running = start_stack()
    yield running
    # `ddmail stack down` is what an operator runs; it must stop everything the stack started.
    subprocess.run(
        [str(VENV_BIN / "ddmail"), "stack", "down", "--root", str(running.root)],
        check=True,
        timeout=90,
    )
    assert running.proc.wait(30) == 0
    stop_stack_proc(running.proc)
    if not os.environ.get("DDMAIL_KEEP_ROOT"):  # keep it to read the logs of a failed run
        shutil.rmtree(running.root, ignore_errors=True)
