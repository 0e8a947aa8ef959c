"""The README and .env.example say what the code does."""

from __future__ import annotations

import re
from dataclasses import fields

from CandleThrob.config import ENV_VARS, AdvancedBatchConfig
from CandleThrob.ingestion.ingest_data import build_parser

from ingest_helpers import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _table_after(heading: str) -> list[list[str]]:
    section = README.split(heading, 1)[1]
    rows = []
    for line in section.splitlines()[1:]:
        if line.startswith("#"):
            break
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows[1:]


def test_configuration_table_lists_exactly_the_config_fields():
    documented = [re.sub(r"`", "", row[0]) for row in _table_after("## Configuration")]
    assert sorted(documented) == sorted(ENV_VARS.values())
    assert sorted(ENV_VARS) == sorted(f.name for f in fields(AdvancedBatchConfig))


def test_env_example_mentions_every_variable_and_holds_no_secret():
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    for variable in ENV_VARS.values():
        assert re.search(rf"^#? ?{variable}=", example, re.M), variable
    assert re.search(r"^POLYGON_API_KEY=$", example, re.M)
    for secret in ("ORACLE_PASSWORD", "ORACLE_WALLET_PASSWORD"):
        assert re.search(rf"^# {secret}=$", example, re.M)


def test_command_line_table_matches_the_parser():
    documented = {re.match(r"`(--[a-z-]+)", row[0]).group(1) for row in _table_after("## Command line")}
    parsed = {opt for action in build_parser()._actions for opt in action.option_strings
              if opt.startswith("--") and opt not in ("--help", "--version")}
    assert documented == parsed


def test_quick_start_commands_are_the_ones_ci_and_users_run():
    quick = README.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    # A venv first: Debian's system Python refuses pip installs (PEP 668).
    assert quick.strip().splitlines() == [
        "python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt",
        "python -m CandleThrob.ingestion.ingest_data --demo"]
    head = README.split("## Quick start", 1)[1].split("```bash", 1)[0]
    assert "Python 3.11 or later" in head
    requires = re.search(r'requires-python = ">=(\d+\.\d+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert f"Python {requires} or later" in head
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "-m pytest -q" in ci and "python -m pytest -q" in README
