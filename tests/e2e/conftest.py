from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.stackrun import VENV_BIN, RunningStack, start_stack, stop_stack_proc


@pytest.fixture(scope="session")
def stack() -> Iterator[RunningStack]:
    running = start_stack()
    yield running
    subprocess.run(
        [str(VENV_BIN / "ddmail"), "stack", "down", "--root", str(running.root)],
        check=True,
        timeout=90,
    )
    assert running.proc.wait(30) == 0
    stop_stack_proc(running.proc)
    shutil.rmtree(running.root, ignore_errors=True)
