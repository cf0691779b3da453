"""Static checks of the playbook: ansible-lint (production profile, offline) and
ansible-playbook --syntax-check with the example inventory."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.deploy.chroot import ANSIBLE_DIR, REPO, venv_bin

pytestmark = pytest.mark.deploy


def _env() -> dict[str, str]:
    # ansible-lint runs ansible-config and ansible-playbook from PATH.
    return {**os.environ, "PATH": f"{venv_bin()}:{os.environ.get('PATH', '')}"}


def test_ansible_lint_passes_the_production_profile() -> None:
    result = subprocess.run(
        [str(venv_bin() / "ansible-lint"), "--nocolor", "ansible/"],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Profile 'production' was required, and it passed" in result.stderr + result.stdout


def test_the_playbook_passes_the_syntax_check() -> None:
    result = subprocess.run(
        [
            str(venv_bin() / "ansible-playbook"),
            "--syntax-check",
            "-i",
            "inventories/example",
            "site.yml",
        ],
        cwd=ANSIBLE_DIR,
        env={**_env(), "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
