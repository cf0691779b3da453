from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.stackrun import RunningStack, start_stack, stop_stack_proc


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack() -> Iterator[RunningStack]:
    running = start_stack()
    yield running
    stop_stack_proc(running.proc)
