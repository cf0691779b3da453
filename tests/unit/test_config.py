"""The deployment's TOML config: clear errors for anything missing or unsafe."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ddmail_common.config import ConfigError, load, parse


def minimal(tmp_path: Path) -> dict[str, Any]:
    secret = tmp_path / "web.key"
    secret.write_text("s" * 40)
    secret.chmod(0o600)
    return {
        "database": {"url": "sqlite:////tmp/x.sqlite3"},
        "backend": {
            "socket": "/run/b.sock",
            "mail_root": "/var/mail",
            "operator_address": "operator@ops.example",
        },
        "keyhandler": {"socket": "/run/k.sock", "unlock_listen": "127.0.0.1:10080"},
        "secrets": {"web": str(secret)},
    }


def test_minimal_config_gets_owasp_argon2_defaults(tmp_path: Path) -> None:
    cfg = parse(minimal(tmp_path))
    assert (cfg.argon2.memory_kib, cfg.argon2.time_cost) == (19456, 2)
    assert cfg.secret("web") == b"s" * 40


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("database", "url"), None, r"database\.url: missing"),
        (("keyhandler", "unlock_listen"), "0.0.0.0:10080", "loopback only"),
        (("keyhandler", "unlock_listen"), "127.0.0.1", "HOST:PORT"),
        (("keyhandler", "argon2_time_cost"), "2", "expected int"),
        (("keyhandler", "argon2_time_cost"), 0, "time_cost >= 1"),
        (("secrets", "web"), "inline-secret-value", "absolute file path"),
        (("backend", "postfix_reload"), "postfix reload", "expected list"),
        (("public", "mailbox_quota_mb"), -1, r"public\.mailbox_quota_mb: expected a whole number"),
    ],
)
def test_bad_settings_are_named(
    tmp_path: Path, path: tuple[str, str], value: Any, message: str
) -> None:
    data = minimal(tmp_path)
    if value is None:
        del data[path[0]][path[1]]
    else:
        data.setdefault(path[0], {})[path[1]] = value
    with pytest.raises(ConfigError, match=message):
        parse(data)


def test_world_readable_secret_file_is_refused(tmp_path: Path) -> None:
    cfg = parse(minimal(tmp_path))
    (tmp_path / "web.key").chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        cfg.secret("web")


def test_short_secret_is_refused(tmp_path: Path) -> None:
    cfg = parse(minimal(tmp_path))
    (tmp_path / "web.key").write_text("short")
    with pytest.raises(ConfigError, match="fewer than 32 bytes"):
        cfg.secret("web")


def test_unknown_secret_name_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"secrets\.admin: missing"):
        parse(minimal(tmp_path)).secret("admin")


def test_invalid_toml_file_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "ddmail.toml"
    bad.write_text("[database\nurl = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(bad)
    with pytest.raises(ConfigError, match="cannot read config"):
        load(tmp_path / "absent.toml")


def test_database_url_with_a_password_is_refused_without_echoing_it(tmp_path: Path) -> None:
    data = minimal(tmp_path)
    data["database"]["url"] = "postgresql+psycopg://ddmail:hunter2-secret@db.internal/ddmail"
    with pytest.raises(ConfigError, match="passfile") as caught:
        parse(data)
    assert "hunter2" not in str(caught.value)


def test_database_url_with_a_passfile_is_accepted(tmp_path: Path) -> None:
    data = minimal(tmp_path)
    data["database"]["url"] = "postgresql+psycopg://ddmail@db.internal/ddmail?passfile=/etc/p"
    assert parse(data).db_url.endswith("?passfile=/etc/p")


def test_stack_up_refuses_a_database_password_on_its_command_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from ddmail_stack.cli import main

    url = "postgresql+psycopg://ddmail:hunter2-secret@127.0.0.1/ddmail"
    assert main(["stack", "up", "--root", str(tmp_path / "r"), "--db", url]) == 2
    err = capsys.readouterr().err
    assert "passfile" in err and "hunter2" not in err
    assert not (tmp_path / "r").exists()  # nothing was started or created


def test_the_command_line_check_accepts_a_valid_file_and_names_what_is_wrong(
    tmp_path: Path,
) -> None:
    """`python -m ddmail_common.config FILE`: Ansible's validate: of the deployed config."""

    def toml(data: dict[str, Any]) -> str:
        lines = []
        for section, values in data.items():
            if isinstance(values, dict):
                lines.append(f"[{section}]")
                lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
        return "\n".join(lines) + "\n"

    def check(data: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        path = tmp_path / "ddmail.toml"
        path.write_text(toml(data))
        return subprocess.run(
            [sys.executable, "-m", "ddmail_common.config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    good = minimal(tmp_path)
    assert check(good).returncode == 0
    bad = {**good, "keyhandler": {**good["keyhandler"], "unlock_listen": "0.0.0.0:10080"}}
    result = check(bad)
    assert result.returncode == 1
    assert "keyhandler.unlock_listen: must listen on loopback only" in result.stderr
