"""``clinvault schedule``, ``retention run`` and ``notify test`` as an operator runs them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from clinvault.cli.app import main
from clinvault.config import get_settings
from clinvault.services.context import ServiceContext
from clinvault.services.cron import next_fire
from tests.conftest import cli_env
from tests.schedule.conftest import audit_events


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Callable[..., Result]]:
    """Runs ``clinvault ARGS`` in this process, through the console script's ``main``."""
    for key in [k for k in os.environ if k.startswith("CLINVAULT_")]:
        monkeypatch.delenv(key)
    for key, value in cli_env(home).items():
        if key.startswith("CLINVAULT_"):
            monkeypatch.setenv(key, value)

    def run(*args: str, code: int = 0) -> Result:
        get_settings.cache_clear()
        monkeypatch.setattr(sys, "argv", ["clinvault", *args])
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            main()
        out, err = capsys.readouterr()
        result = Result(int(exited.value.code or 0), out, err)
        assert result.returncode == code, f"{args}: {result.returncode}\n{result.stderr}"
        return result

    yield run
    get_settings.cache_clear()


def test_the_console_script_prints_a_new_schedule_in_utc(home: Path) -> None:
    exe = shutil.which("clinvault", path=str(Path(sys.executable).parent))
    assert exe is not None
    before = datetime.now(UTC)
    args = ["schedule", "create", "--name", "n", "--type", "database", "--cron", "@daily", "--json"]
    done = subprocess.run(
        [exe, *args], env=cli_env(home), capture_output=True, text=True, timeout=120, check=True
    )
    created = json.loads(done.stdout)
    assert created["next_run_at"] == next_fire("@daily", "UTC", before).isoformat()
    assert created["next_run_at"].endswith("T00:00:00+00:00")


def test_schedule_commands(cli: Callable[..., Result], ctx: ServiceContext) -> None:
    before = datetime.now(UTC)
    created = json.loads(
        cli(
            "schedule",
            "create",
            "--name",
            "nightly",
            "--type",
            "full",
            "--cron",
            "0 2 * * *",
            "--timezone",
            "Europe/Berlin",
            "--retention-days",
            "14",
            "--keep-daily",
            "7",
            "--json",
        ).stdout
    )
    assert created["next_run_at"].endswith("+00:00")
    assert datetime.fromisoformat(created["next_run_at"]) == next_fire(
        "0 2 * * *", "Europe/Berlin", before
    )
    assert created["retention_days"] == 14 and created["keep_rules"] == {"daily": 7}

    listed = json.loads(cli("schedule", "list", "--json").stdout)
    assert [s["name"] for s in listed] == ["nightly"]

    updated = json.loads(
        cli(
            "schedule",
            "update",
            "nightly",
            "--cron",
            "15 3 * * 1-5",
            "--keep-weekly",
            "4",
            "--json",
        ).stdout
    )
    assert updated["cron_expression"] == "15 3 * * 1-5"
    assert updated["keep_rules"] == {"daily": 7, "weekly": 4}

    paused = json.loads(cli("schedule", "toggle", "nightly", "--json").stdout)
    assert paused["is_active"] is False and paused["next_run_at"] is None
    resumed = json.loads(cli("schedule", "toggle", "nightly", "--on", "--json").stdout)
    assert resumed["is_active"] is True

    runs = json.loads(cli("schedule", "preview", "nightly", "--count", "3", "--json").stdout)
    assert len(runs["runs"]) == 3

    bad = cli("schedule", "create", "--name", "x", "--type", "full", "--cron", "* *", code=2)
    assert "5 fields" in bad.stderr
    taken = cli(
        "schedule", "create", "--name", "nightly", "--type", "full", "--cron", "@daily", code=4
    )
    assert "already exists" in taken.stderr

    cli("schedule", "delete", "nightly", code=2)  # needs --yes
    cli("schedule", "delete", "nightly", "--yes")
    assert json.loads(cli("schedule", "list", "--json").stdout) == []
    cli("schedule", "show", "nightly", code=3)

    actions = [e.action for e in audit_events(ctx) if e.target_type == "schedule"]
    assert actions == ["schedule.create"] + ["schedule.update"] * 3 + ["schedule.delete"]
    assert all("(command line)" in e.actor_name for e in audit_events(ctx, "schedule.create"))


def test_retention_dry_run_and_notify_test(cli: Callable[..., Result]) -> None:
    report = json.loads(cli("retention", "run", "--dry-run", "--json").stdout)
    assert report["dry_run"] is True and report["would_delete"] == [] and report["decisions"] == []
    refused = cli("retention", "run", code=2)
    assert "--yes" in refused.stderr

    missing = cli("notify", "test", code=2)
    assert "no notification channel" in missing.stderr
