"""The operator's commands are production code: they never load the local stack's package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROBE = """
import sys
from pathlib import Path
import ddmail_admin.cli as cli
p = cli.parser()
for argv in (["admin", "db", "migrate", "--config", "/x.toml"],
             ["admin", "billing", "run", "--root", "/x"],
             ["admin", "domain", "list", "--config", "/x.toml"],
             ["admin", "keys", "rotate-master", "--config", "/x.toml"]):
    p.parse_args(argv)
cli.main(["admin", "domain", "list", "--config", "/nonexistent/ddmail.toml"])
print(sorted(m for m in sys.modules if m.split(".")[0] == "ddmail_stack"))
"""


def test_importing_and_running_the_admin_commands_never_loads_ddmail_stack() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert "cannot read config /nonexistent/ddmail.toml" in out.stderr


def test_the_stack_area_is_handed_to_ddmail_stack() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ddmail_admin.cli", "stack", "down", "--root", "/nonexistent"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "no stack is running in /nonexistent" in out.stderr


def test_admin_root_reads_the_config_named_in_stack_json(tmp_path: Path) -> None:
    (tmp_path / "stack.json").write_text('{"config": "/nonexistent/etc/ddmail.toml"}')
    out = subprocess.run(
        [sys.executable, "-m", "ddmail_admin.cli", "admin", "audit", "verify", "a",
         "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert "cannot read config /nonexistent/etc/ddmail.toml" in out.stderr
