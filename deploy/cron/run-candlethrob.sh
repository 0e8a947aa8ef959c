#!/usr/bin/env bash
# Nightly CandleThrob update for cron (see candlethrob.cron beside this file).
#
#   run-candlethrob.sh [extra tool options, e.g. --tickers AAPL,MSFT]
#
# Runs the ingestion tool from CANDLETHROB_HOME with JSON logs and a dated JSON
# report, appends its stdout and stderr to $CANDLETHROB_LOG_DIR/candlethrob.log
# (rotating that file itself, no logrotate needed) and exits with the tool's
# own exit code, so cron's mail and monitoring see what the tool reported:
#
#   0        success
#   1        some tickers failed or are incomplete; the next run resumes them
#   2        bad configuration or usage; nothing was written
#   3        fatal: authentication or database unreachable
#   4        another run holds the lock (an overlapping cron run, a Kestra task,
#            a laptop). Not masked as 0: a lock that is still held the next
#            night means a stuck run, and that should be seen
#   130/143  interrupted; the checkpoint is kept and the next run resumes
#
# Settings, from the environment or from .env in CANDLETHROB_HOME (all but
# CANDLETHROB_HOME itself; the environment wins, as with python-dotenv):
#   CANDLETHROB_HOME           install directory (default: the repository holding this script)
#   CANDLETHROB_LOG_DIR        log and report directory (default: $CANDLETHROB_HOME/logs)
#   CANDLETHROB_LOG_MAX_BYTES  rotate candlethrob.log once larger than this (default: 10 MiB)
#   CANDLETHROB_LOG_KEEP       rotated logs kept, candlethrob.log.1 newest (default: 7)
#   CANDLETHROB_PYTHON         interpreter (default: $CANDLETHROB_HOME/.venv/bin/python, else python3)
#   CANDLETHROB_CMD            replaces the tool command: one simple command, evaluated
#                              by the shell and given the options (tests use a stand-in)
#
# The script is silent on success; on failure it prints one line to stderr,
# which cron mails to MAILTO.

set -euo pipefail
umask 027

script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
CANDLETHROB_HOME=${CANDLETHROB_HOME:-$(cd -- "$script_dir/../.." && pwd)}
cd -- "$CANDLETHROB_HOME"

# Reads KEY=VALUE lines the way python-dotenv does for the simple cases and
# never executes them: sourcing would run `$(...)`, expand `$` inside
# passwords and cut URLs at an unquoted `&`. Variables already set win.
load_env_file() {
  local line key value
  while IFS= read -r line || [[ -n $line ]]; do
    line=${line%$'\r'}
    [[ $line =~ ^[[:space:]]*(export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*=[[:space:]]*(.*)$ ]] || continue
    key=${BASH_REMATCH[2]}
    value=${BASH_REMATCH[3]}
    if [[ $value =~ ^\"(.*)\"[[:space:]]*(#.*)?$ || $value =~ ^\'(.*)\'[[:space:]]*(#.*)?$ ]]; then
      value=${BASH_REMATCH[1]}
    else
      value=${value%%[[:space:]]#*}
      value=${value%"${value##*[![:space:]]}"}
    fi
    if [[ -z ${!key+set} ]]; then
      export "$key=$value"
    fi
  done <"$1"
}

if [[ -f .env ]]; then
  load_env_file .env
fi

log_dir=${CANDLETHROB_LOG_DIR:-$CANDLETHROB_HOME/logs}
log_file=$log_dir/candlethrob.log
log_max_bytes=${CANDLETHROB_LOG_MAX_BYTES:-10485760}
log_keep=${CANDLETHROB_LOG_KEEP:-7}
if ! [[ $log_max_bytes =~ ^[0-9]+$ && $log_keep =~ ^[1-9][0-9]*$ ]]; then
  echo "candlethrob: CANDLETHROB_LOG_MAX_BYTES must be a whole number and CANDLETHROB_LOG_KEEP at least 1" >&2
  exit 2
fi

# candlethrob.log -> .1 -> .2 ... -> .$log_keep, the oldest dropped.
rotate_log() {
  local size i
  [[ -f $log_file ]] || return 0
  size=$(wc -c <"$log_file")
  if (( size <= log_max_bytes )); then
    return 0
  fi
  rm -f -- "$log_file.$log_keep"
  for (( i = log_keep - 1; i >= 1; i-- )); do
    if [[ -f $log_file.$i ]]; then
      mv -f -- "$log_file.$i" "$log_file.$(( i + 1 ))"
    fi
  done
  mv -f -- "$log_file" "$log_file.1"
}

# The wrapper's own lines are JSON too, so the whole file stays JSON lines.
log_event() {
  local message=${2//\\/\\\\}
  message=${message//\"/\\\"}
  printf '{"time": "%s", "level": "%s", "logger": "run-candlethrob", "message": "%s"}\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$1" "$message" >>"$log_file"
}

run_tool() {
  if [[ -n ${CANDLETHROB_CMD:-} ]]; then
    eval "exec $CANDLETHROB_CMD \"\$@\""
  fi
  local python=${CANDLETHROB_PYTHON:-}
  if [[ -z $python ]]; then
    if [[ -x .venv/bin/python ]]; then
      python=.venv/bin/python
    else
      python=python3
    fi
  fi
  export PYTHONPATH="$CANDLETHROB_HOME${PYTHONPATH:+:$PYTHONPATH}"
  exec "$python" -m CandleThrob.ingestion.ingest_data "$@"
}

mkdir -p -- "$log_dir"
rotate_log

report=$log_dir/report-$(date +%F).json
# The options this wrapper always passes (tests check each against --help).
tool_args=(--log-format json --no-progress --report "$report")

log_event INFO "start in $CANDLETHROB_HOME, report $report"

# In the background so a TERM or INT sent to this script reaches the tool,
# which then stops cleanly and keeps its checkpoint; `trap - INT` undoes the
# SIGINT ignore that bash gives background jobs.
( trap - INT; run_tool "${tool_args[@]}" "$@" ) >>"$log_file" 2>&1 &
child=$!
trap 'kill -TERM "$child" 2>/dev/null || true' TERM HUP
trap 'kill -INT "$child" 2>/dev/null || true' INT

# A trapped signal ends `wait` early; wait again until the tool has exited.
rc=0
while :; do
  rc=0
  wait "$child" || rc=$?
  kill -0 "$child" 2>/dev/null || break
done
trap - TERM HUP INT

case $rc in
  0) log_event INFO "finished, exit 0" ;;
  1) log_event WARNING "finished, exit 1: some tickers failed or are incomplete; the next run resumes them" ;;
  4) log_event WARNING "exit 4: another run holds the lock" ;;
  130 | 143) log_event WARNING "exit $rc: interrupted; the next run resumes from the checkpoint" ;;
  *) log_event ERROR "exit $rc" ;;
esac

if (( rc != 0 )); then
  echo "candlethrob: exit $rc, see $log_file" >&2
fi
exit "$rc"
