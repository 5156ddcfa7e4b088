# Children of a script, started so that they can all be stopped, and stopped within a bound.
# Sourced by scripts/dev.sh (`make dev`); tests/devtools/test_supervise.py runs it with stand-ins.
#
#   . scripts/supervise.sh
#   supervise                      # TERM, INT or HUP: stop every child, then exit 143, 130 or 129;
#                                  # any other exit: stop them too
#   spawn LOG CMD [ARGS...]        # CMD in the background, output to LOG ("-": ours); its pid in SPAWNED
#   spawn_last LOG CMD [ARGS...]   # the same, for what the others use (a broker): stopped after them
#   run_step CMD [ARGS...]         # CMD to its end, as a child a signal stops with the rest
#   wait_child PID                 # wait for one child; its exit status
#
# Each child starts in a session of its own, so a signal to its process group reaches everything
# it started (`dagster dev` starts a webserver, a daemon and a code server; `seqctl broker` the
# broker binary), and a terminal's Ctrl-C or hangup reaches only this script, which passes it on.
# Each child starts with SIGINT, SIGQUIT and SIGTERM at their defaults: a background job of a
# non-interactive shell gets the first two ignored, a `dagster dev` that ignores SIGINT ignores
# SIGTERM and its own shutdown too, and a Python parent that ran Dagster in process (its
# interrupt capture maps SIGTERM to SIGINT's handler on the way out) may hand SIGTERM on ignored.
# Stopping sends SIGTERM to every child, and to the group of each child that has exited, waits
# until none of the processes of their groups is left or SUPERVISE_GRACE seconds (whole seconds)
# have passed, then sends SIGKILL to every group. Children spawned with spawn_last get their
# SIGTERM once the others are gone, or one second before the SIGKILL. (`dagster dev` alone takes
# 5-10 s to stop its parts in order here, so within the bound it is usually killed; runs in flight
# are not in its groups, and the Dagster storage is SQLite, which a kill leaves consistent.)
# Processes that leave their group on purpose (the warm run workers of seq_assets.launcher lead
# sessions of their own) are not stopped here: a run worker finishes its run and exits once the
# daemon that handed it the run is gone.

SUPERVISE_GRACE="${SUPERVISE_GRACE:-3}"
SUPERVISE_PYTHON="${SUPERVISE_PYTHON:-python3}"
_SUPERVISED=()
_LAST=" "

_SUPERVISE_EXEC='import os, signal, sys
os.setsid()
for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM):
    signal.signal(sig, signal.SIG_DFL)
os.execvp(sys.argv[1], sys.argv[1:])'

spawn() {
  local log=$1
  shift
  if [ "$log" = - ]; then
    "$SUPERVISE_PYTHON" -c "$_SUPERVISE_EXEC" "$@" </dev/null &
  else
    "$SUPERVISE_PYTHON" -c "$_SUPERVISE_EXEC" "$@" </dev/null >"$log" 2>&1 &
  fi
  SPAWNED=$!
  _SUPERVISED+=("$SPAWNED")
}

spawn_last() {
  spawn "$@"
  _LAST+="$SPAWNED "
}

wait_child() {
  local status=0
  wait "$1" || status=$?  # a trapped signal ends the wait at once; the trap then stops everything
  return "$status"
}

run_step() {
  spawn - "$@"
  wait_child "$SPAWNED"
}

# The processes still running in the groups of the children ARGS (default: all), as "pid command"
# lines, and how many (zombies do not count: an orphan whose new parent never reaps it stays one).
_supervised_ps() {
  local groups=" ${*:-${_SUPERVISED[*]}} "
  ps -e -o pgid=,stat=,pid=,args= | awk -v groups="$groups" \
    'index(groups, " " $1 " ") && $2 !~ /^Z/ { $1 = $2 = ""; print substr($0, 3, 100) }'
}

_supervised_running() {
  local groups=" ${*:-${_SUPERVISED[*]}} "
  ps -e -o pgid=,stat= | awk -v groups="$groups" 'index(groups, " " $1 " ") && $2 !~ /^Z/ { n++ } END { print n + 0 }'
}

_first() {  # the children not spawned with spawn_last
  local pid
  for pid in "${_SUPERVISED[@]}"; do
    case $_LAST in *" $pid "*) ;; *) printf '%s ' "$pid" ;; esac
  done
}

_now_ms() {
  if [ -n "${EPOCHREALTIME:-}" ]; then  # bash 5
    local t=${EPOCHREALTIME/[.,]/}
    echo $((10#$t / 1000))
  else
    echo $(($(date +%s) * 1000))
  fi
}

# SIGTERM, once, to each child ARGS while it runs: it stops what it started in its own order
# (`dagster dev` stops its webserver and daemon before its code server, so no sensor tick fails on
# the way out). Once a child has exited, SIGTERM, once, to whatever it left in its group.
_term_children() {
  local pid running
  running=" $(jobs -rp | tr '\n' ' ') "  # children not reaped yet: their pids cannot have been reused
  for pid in "$@"; do
    case $running in
      *" $pid "*)
        case $_TERMED in *" $pid "*) ;; *) kill -TERM "$pid" 2>/dev/null || true; _TERMED+="$pid " ;; esac ;;
      *)
        case $_GROUP_TERMED in *" $pid "*) ;; *) kill -TERM -- "-$pid" 2>/dev/null || true; _GROUP_TERMED+="$pid " ;; esac ;;
    esac
  done
}

# Until the processes of the groups ARGS are gone or the clock passes $1 (ms), SIGTERM as above.
_stop_until() {
  local until=$1
  shift
  _term_children "$@"
  while [ "$(_supervised_running "$@")" -gt 0 ] && [ "$(_now_ms)" -lt "$until" ]; do
    sleep 0.1
    _term_children "$@"
  done
}

stop_children() {
  trap '' INT TERM HUP  # a second Ctrl-C does not cut the stop short: it is bounded anyway
  trap - EXIT
  [ "${#_SUPERVISED[@]}" -gt 0 ] || return 0
  local pid deadline first
  _TERMED=" " _GROUP_TERMED=" "
  deadline=$(($(_now_ms) + SUPERVISE_GRACE * 1000))
  first=$(_first)
  # The others first; what they read from (spawn_last) lives on until they are gone, or for all
  # but the last second.
  # shellcheck disable=SC2086
  [ -z "$first" ] || _stop_until $((deadline - 1000)) $first
  _stop_until "$deadline" "${_SUPERVISED[@]}"
  if [ "$(_supervised_running)" -gt 0 ]; then
    echo "still running ${SUPERVISE_GRACE}s after SIGTERM, sending SIGKILL:" >&2
    _supervised_ps | sed 's/^/  /' >&2
    for pid in "${_SUPERVISED[@]}"; do
      kill -KILL -- "-$pid" 2>/dev/null || true
    done
    deadline=$(($(_now_ms) + 200))  # SIGKILL takes effect at once, but not synchronously
    while [ "$(_supervised_running)" -gt 0 ] && [ "$(_now_ms)" -lt "$deadline" ]; do
      sleep 0.05
    done
  fi
  wait 2>/dev/null || true
  _SUPERVISED=() _LAST=" "
}

supervise() {
  trap 'stop_children; exit 143' TERM
  trap 'stop_children; exit 130' INT
  trap 'stop_children; exit 129' HUP  # the terminal closed: its hangup no longer reaches the children
  trap 'stop_children' EXIT
}
