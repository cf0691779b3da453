"""Section [milter] of the deployment's config: safe defaults, clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ddmail_common.config import ConfigError, MilterSettings, parse
from tests.unit.test_config import minimal


def test_milter_defaults_are_a_limit_and_the_main_database(tmp_path: Path) -> None:
    cfg = parse(minimal(tmp_path))
    assert cfg.milter == MilterSettings()
    assert cfg.milter.send_limit_recipients == 200
    assert cfg.milter.send_limit_window_seconds == 3600
    assert cfg.milter.db_url == ""  # the milter then reads database.url
    assert cfg.milter.socket == Path("/run/ddmail-milter/milter.sock")


def test_milter_settings_are_read(tmp_path: Path) -> None:
    data = minimal(tmp_path)
    data["milter"] = {
        "socket": "/run/m/m.sock",
        "db_url": "postgresql+psycopg://ro@db/ddmail?passfile=/etc/ddmail/ro.pgpass",
        "send_limit_recipients": 50,
        "send_limit_window_seconds": 600,
    }
    milter = parse(data).milter
    assert milter.socket == Path("/run/m/m.sock")
    assert (milter.send_limit_recipients, milter.send_limit_window_seconds) == (50, 600)
    assert milter.db_url.startswith("postgresql+psycopg://ro@db/")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("send_limit_recipients", 0, "positive"),
        ("send_limit_window_seconds", -1, "positive"),
        ("send_limit_recipients", "many", "expected int"),
        ("db_url", "postgresql://ro:hunter2@db/ddmail", "carries a password"),
    ],
)
def test_bad_milter_settings_are_named(tmp_path: Path, key: str, value: Any, message: str) -> None:
    data = minimal(tmp_path)
    data["milter"] = {key: value}
    with pytest.raises(ConfigError, match=message) as exc:
        parse(data)
    assert "hunter2" not in str(exc.value)
