#!/usr/bin/env bash
# `make dev`: broker, demo data when the lake is empty, the batch history, the serving API and
# `dagster dev` with the stream sensors on. Ctrl-C or SIGTERM stops everything it started within
# 5 s (scripts/supervise.sh), also when it was started with SIGINT ignored (in the background, by
# nohup or a service manager).
#
# A second start keeps the lake, DAGSTER_HOME (runs, sensor cursors) and the landing files; only a
# demo load that did not finish is done again (both steps write whole days: doing them again is
# harmless). The in-memory broker starts empty: the sensors follow it from its start (README, "A
# broker that is down"), and the producer's event ids are new in every run. Records the broker
# held but the stream had not read yet when it stopped (the last seconds of demo traffic) are gone
# with it; a micro-batch in flight at the stop ends canceled (not failed, so not retried).
#
# Optional settings: DEV_DATA_DIR (default .data), DEV_UI_PORT (3000), DEV_API_PORT (8000),
# DEV_BROKER_PORT (9092; SEQ_KAFKA_BOOTSTRAP, when set, is what the platform reads instead).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
DATA="${DEV_DATA_DIR:-$PWD/.data}"
UI_PORT="${DEV_UI_PORT:-3000}"
API_PORT="${DEV_API_PORT:-8000}"
BROKER_PORT="${DEV_BROKER_PORT:-9092}"
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/.dagster_home}"
export SEQ_LAKE_URI="${SEQ_LAKE_URI:-$DATA/lake}"
export SEQ_LANDING_DIR="${SEQ_LANDING_DIR:-$DATA/landing}"
export SEQ_KAFKA_BOOTSTRAP="${SEQ_KAFKA_BOOTSTRAP:-127.0.0.1:$BROKER_PORT}"
LOGS="$DATA/logs"
LOADING="$DATA/.demo-load-unfinished"

SUPERVISE_PYTHON=$BIN/python
# shellcheck source=scripts/supervise.sh
. scripts/supervise.sh
supervise

mkdir -p "$DAGSTER_HOME" "$LOGS"
# Our settings are kept current; a dagster.yaml someone wrote by hand is left alone.
if [ ! -f "$DAGSTER_HOME/dagster.yaml" ] || head -1 "$DAGSTER_HOME/dagster.yaml" | grep -q "^# Dagster instance settings for .make dev."; then
  cp scripts/dagster.yaml "$DAGSTER_HOME/dagster.yaml"
fi

commands=$($BIN/seqctl --help 2>/dev/null || true)
has() { grep -q " $1" <<<"$commands"; }

if has broker; then
  # Stopped last: a micro-batch still reading its offsets when `make dev` stops gets to finish.
  spawn_last "$LOGS/broker.log" $BIN/seqctl broker --port "$BROKER_PORT"
fi

if [ -f "$LOADING" ] || [ ! -d "$SEQ_LAKE_URI/sequences" ]; then
  if [ -f "$LOADING" ]; then
    echo "the demo load did not finish last time: generating 7 days of demo history and materializing them again"
  else
    echo "lake is empty: generating 7 days of demo history and materializing them"
  fi
  touch "$LOADING"
  run_step $BIN/seqctl demo-data --users 2000 --days 7 --events 200000
  run_step $BIN/seqctl materialize --days 7 --record
  rm -f "$LOADING"
else
  echo "keeping the lake at $SEQ_LAKE_URI"
fi

# Live traffic for the stream: a slow, endless demo producer (same shape and faults as demo-data).
if has produce; then
  spawn "$LOGS/produce.log" $BIN/seqctl produce --source user_engagements --rate 20 --duration 1000000
fi

if has serve; then
  spawn "$LOGS/serve.log" $BIN/seqctl serve --port "$API_PORT"
  echo "serving API on http://127.0.0.1:$API_PORT"
fi

# On a stop, the stream micro-batches in flight are canceled while the broker they read from is
# still up: they would fail, and be retried on the next start against a broker that holds other
# records at their offsets. A process that has Dagster loaded ahead waits for the SIGTERM to do it
# (seq_assets/orchestration/launcher.py, cancel_runs_in_flight).
spawn "$LOGS/stop.log" $BIN/python -m seq_assets.orchestration.launcher --cancel-on-sigterm seq/source \
  "make dev stopped, and with it the in-memory broker that held this micro-batch"

echo "Dagster UI on http://127.0.0.1:$UI_PORT"
spawn - $BIN/dagster dev -w workspace.yaml -h 127.0.0.1 -p "$UI_PORT"
wait_child "$SPAWNED"
