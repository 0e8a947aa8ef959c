#!/usr/bin/env bash
# Nightly CandleThrob update for cron (see candlethrob.cron beside this file).
#
#   run-candlethrob.sh [extra tool options, e.g. --tickers AAPL,MSFT]
#
# Runs the ingestion tool from CANDLETHROB_HOME with JSON logs and a JSON report
# of its own (report-<date>T<time>-<pid>.json), appends everything to
# $CANDLETHROB_LOG_DIR/candlethrob.log as JSON lines (the tool's JSON log lines as
# they are; any other line, such as the summary on stdout or a Python traceback,
# wrapped in a JSON object with its stream), rotates that file itself (no
# logrotate needed), prunes old reports, and tells what happened:
#
#   0        success
#   1        partial: the tool ran to its end and wrote its report, but some
#            tickers failed or were quarantined, or a time/memory budget stopped
#            it; the next run resumes them
#   2        bad configuration or usage; nothing was written
#   3        fatal: authentication or database unreachable
#   4        another run holds the lock (an overlapping cron run, a Kestra task,
#            a laptop). Not masked as 0: a lock that is still held the next
#            night means a stuck run, and that should be seen
#   130/143  interrupted; the checkpoint is kept and the next run resumes
#   70       CRASH: the tool did not run to its end, and the next run will not
#            fix it by itself. The tool exited 0 or 1 without writing its report
#            (an ImportError from a Python without the dependencies, a bug), or
#            exited 2, 3 or 4 without a word of its own (the interpreter's own
#            errors, e.g. a missing script)
#   other    CRASH as well, with the tool's own status: 126/127 the interpreter
#            cannot be run or found, 128+N killed by signal N (137: SIGKILL,
#            often the out-of-memory killer)
#
# Settings, from the environment or from .env in CANDLETHROB_HOME (all but
# CANDLETHROB_HOME itself; the environment wins, as with python-dotenv):
#   CANDLETHROB_HOME           install directory (default: the repository holding this script)
#   CANDLETHROB_LOG_DIR        log and report directory (default: $CANDLETHROB_HOME/logs)
#   CANDLETHROB_LOG_MAX_BYTES  rotate candlethrob.log once larger than this (default: 10 MiB)
#   CANDLETHROB_LOG_KEEP       rotated logs kept, candlethrob.log.1 newest (default: 7)
#   CANDLETHROB_REPORT_KEEP    reports kept, newest first (default: 60; 0: no count limit)
#   CANDLETHROB_REPORT_DAYS    reports older than this many days are deleted (default: 90; 0: no age limit)
#   CANDLETHROB_PYTHON         interpreter (default: $CANDLETHROB_HOME/.venv/bin/python, else python3)
#   CANDLETHROB_CMD            replaces the tool command: one simple command, evaluated
#                              by the shell and given the options (tests use a stand-in)
#
# The script is silent on success; otherwise it prints one line to stderr,
# which cron mails to MAILTO: what happened, and for a crash its last error line.

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
report_keep=${CANDLETHROB_REPORT_KEEP:-60}
report_days=${CANDLETHROB_REPORT_DAYS:-90}
if ! [[ $log_max_bytes =~ ^[0-9]+$ && $log_keep =~ ^[1-9][0-9]*$ ]]; then
  echo "candlethrob: CANDLETHROB_LOG_MAX_BYTES must be a whole number and CANDLETHROB_LOG_KEEP at least 1" >&2
  exit 2
fi
if ! [[ $report_keep =~ ^[0-9]+$ && $report_days =~ ^[0-9]+$ ]]; then
  echo "candlethrob: CANDLETHROB_REPORT_KEEP and CANDLETHROB_REPORT_DAYS must be whole numbers (0: no limit)" >&2
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

# Text as a JSON string's contents: backslash, quote and control characters escaped.
json_escape() {
  local text=$1
  text=${text//\\/\\\\}
  text=${text//\"/\\\"}
  text=${text//$'\t'/\\t}
  text=${text//$'\r'/\\r}
  text=${text//$'\n'/\\n}
  printf '%s' "${text//[$'\x01'-$'\x1f']/?}"
}

# The wrapper's own lines are JSON too, so the whole file stays JSON lines.
log_event() {
  printf '{"time": "%s", "level": "%s", "logger": "run-candlethrob", "message": "%s"}\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$1" "$(json_escape "$2")" >>"$log_file"
}

# Copies the tool's output (stdin) to the log as JSON lines: a JSON object line
# as it is, any other line wrapped as {"stream": STREAM, "message": line}. For
# stderr it also leaves two marks in $work: `spoke` once the tool wrote a log
# line of its own (JSON with a run id), and `last_error`, its last other line.
# With the standard library's json module when a python3 is on PATH (it needs
# nothing the tool's own interpreter may lack); else in bash, where a line counts
# as the tool's own JSON when it has the shape of one.
JSON_LINES_PY='
import datetime, json, sys
stream, level, marks = sys.argv[1:4]
for raw in sys.stdin.buffer:
    line = raw.decode("utf-8", "replace").rstrip("\r\n")
    if not line.strip():
        continue
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if isinstance(record, dict):
        if marks and record.get("run_id"):
            open(marks + "/spoke", "w").close()
    else:
        if marks:
            with open(marks + "/last_error", "w", encoding="utf-8") as mark:
                mark.write(line)
        line = json.dumps({"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
                           "level": level, "logger": "run-candlethrob", "stream": stream, "message": line})
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
'
json_lines() {
  local stream=$1 level=$2 marks=$3 line filter_python
  filter_python=$(command -v python3 || true)
  if [[ -n $filter_python ]]; then
    exec "$filter_python" -I -S -c "$JSON_LINES_PY" "$stream" "$level" "$marks"
  fi
  while IFS= read -r line || [[ -n $line ]]; do
    line=${line%$'\r'}
    [[ -n ${line//[[:space:]]/} ]] || continue
    if [[ $line =~ ^\{\"time\":\ \"[^\"]*\",\ \"level\":\ .*\}$ ]]; then
      if [[ -n $marks && $line =~ \"run_id\":\ \"[^\"]+\" ]]; then
        : >"$marks/spoke"
      fi
      printf '%s\n' "$line"
    else
      if [[ -n $marks ]]; then
        printf '%s' "$line" >"$marks/last_error"
      fi
      printf '{"time": "%s", "level": "%s", "logger": "run-candlethrob", "stream": "%s", "message": "%s"}\n' \
        "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$level" "$stream" "$(json_escape "$line")"
    fi
  done
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

# Reports beyond the newest $report_keep, or older than $report_days days, go.
prune_reports() {
  local name pruned=0
  if (( report_days > 0 )); then
    while IFS= read -r -d '' name; do
      rm -f -- "$name" && pruned=$(( pruned + 1 ))
    done < <(find "$log_dir" -maxdepth 1 -type f -name 'report-*.json' -mmin "+$(( report_days * 1440 ))" -print0)
  fi
  if (( report_keep > 0 )); then
    while IFS=' ' read -r _ name; do
      rm -f -- "$log_dir/$name" && pruned=$(( pruned + 1 ))
    done < <(find "$log_dir" -maxdepth 1 -type f -name 'report-*.json' -printf '%T@ %f\n' \
               | sort -rn | tail -n "+$(( report_keep + 1 ))")
  fi
  if (( pruned > 0 )); then
    log_event INFO "pruned $pruned old reports (CANDLETHROB_REPORT_KEEP=$report_keep, CANDLETHROB_REPORT_DAYS=$report_days)"
  fi
}

# The report's top-level "exit_code" (the tool writes it sorted, two-space indented).
report_exit_code() {
  sed -n 's/^  "exit_code": \([0-9][0-9]*\),\{0,1\}$/\1/p' "$1" | head -n 1
}

mkdir -p -- "$log_dir"
rotate_log

report=$log_dir/report-$(date +%Y-%m-%dT%H%M%S)-$$.json
rm -f -- "$report"
# The options this wrapper always passes (tests check each against --help).
tool_args=(--log-format json --no-progress --report "$report")

work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT
mkfifo -- "$work/out" "$work/err"

log_event INFO "start in $CANDLETHROB_HOME, report $report"

# The filters first, then the pipes opened here and handed to the tool, so that a
# tool that never starts still closes them and the filters end.
json_lines stdout info "" <"$work/out" >>"$log_file" &
out_filter=$!
json_lines stderr warning "$work" <"$work/err" >>"$log_file" &
err_filter=$!
exec 3>"$work/out" 4>"$work/err"

# In the background so a TERM or INT sent to this script reaches the tool,
# which then stops cleanly and keeps its checkpoint; `trap - INT` undoes the
# SIGINT ignore that bash gives background jobs.
( trap - INT; exec 3>&- 4>&-; run_tool "${tool_args[@]}" "$@" ) >&3 2>&4 &
child=$!
exec 3>&- 4>&-
trap 'kill -TERM "$child" 2>/dev/null || true' TERM HUP
trap 'kill -INT "$child" 2>/dev/null || true' INT

# A trapped signal ends `wait` early; wait again until the tool has exited.
rc=0
while :; do
  rc=0
  # (stderr off: bash would add its own "Killed ..." line for a tool killed by a signal)
  { wait "$child" || rc=$?; } 2>/dev/null
  kill -0 "$child" 2>/dev/null || break
done
trap - TERM HUP INT
wait "$out_filter" "$err_filter" || true

# What happened: the exit code, checked against what the tool leaves when it
# really ran (its report for 0 and 1, a log line of its own for 2, 3 and 4).
reported=
if [[ -s $report ]]; then
  reported=$(report_exit_code "$report")
fi
last_error=
if [[ -f $work/last_error ]]; then
  last_error=$(<"$work/last_error")
fi
crash=
case $rc in
  0 | 1)
    if [[ -z $reported ]]; then
      crash="exit $rc without a report: the tool did not run to its end"
    elif [[ $reported != "$rc" ]]; then
      crash="exit $rc, but its report says exit $reported: the tool failed after writing it"
    fi ;;
  2 | 3 | 4)
    if [[ ! -f $work/spoke && -z $reported ]]; then
      crash="exit $rc without a log line of the tool's own: the interpreter failed, not the tool"
    fi ;;
  130 | 143) ;;
  126 | 127) crash="exit $rc: the interpreter cannot be run or was not found" ;;
  *)
    if (( rc > 128 )); then
      crash="exit $rc: killed by signal $(kill -l $(( rc - 128 )) 2>/dev/null || echo $(( rc - 128 )))"
    else
      crash="exit $rc, which the tool never uses"
    fi ;;
esac

status=$rc
if [[ -n $crash ]]; then
  message="CRASH, not a partial run: $crash${last_error:+ (last error: $last_error)}; the next run will not fix this by itself"
  log_event ERROR "$message"
  case $rc in 0 | 1 | 2 | 3 | 4 | 130 | 143) status=70 ;; esac
else
  case $rc in
    0) log_event INFO "finished, exit 0" ;;
    1) log_event WARNING "finished, exit 1: partial run (report written): some tickers failed or were quarantined, or a budget stopped it; the next run resumes them" ;;
    2) log_event ERROR "exit 2: bad configuration or usage; nothing was written" ;;
    3) log_event ERROR "exit 3: fatal (authentication, database or universe); see the log" ;;
    4) log_event WARNING "exit 4: another run holds the lock" ;;
    130 | 143) log_event WARNING "exit $rc: interrupted; the next run resumes from the checkpoint" ;;
  esac
fi

prune_reports

if [[ -n $crash ]]; then
  echo "candlethrob: CRASH (exit $rc): $crash${last_error:+ (last error: $last_error)}; see $log_file" >&2
elif (( rc == 1 )); then
  echo "candlethrob: partial run (exit 1); the next run resumes it; see $report" >&2
elif (( rc != 0 )); then
  echo "candlethrob: exit $rc, see $log_file" >&2
fi
exit "$status"
