#!/usr/bin/env bash
# `make dev`: broker, demo data when the lake is empty, the batch history, the serving API and
# `dagster dev` with the stream sensors on. Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/.dagster_home}"
export SEQ_LAKE_URI="${SEQ_LAKE_URI:-$PWD/.data/lake}"
export SEQ_LANDING_DIR="${SEQ_LANDING_DIR:-$PWD/.data/landing}"
mkdir -p "$DAGSTER_HOME" .data/logs
# Our settings are kept current; a dagster.yaml someone wrote by hand is left alone.
if [ ! -f "$DAGSTER_HOME/dagster.yaml" ] || head -1 "$DAGSTER_HOME/dagster.yaml" | grep -q "^# Dagster instance settings for .make dev."; then
  cp scripts/dagster.yaml "$DAGSTER_HOME/dagster.yaml"
fi

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

if $BIN/seqctl --help 2>/dev/null | grep -q " broker"; then
  $BIN/seqctl broker > .data/logs/broker.log 2>&1 &
  pids+=($!)
fi

if [ ! -d "$SEQ_LAKE_URI/sequences" ]; then
  echo "lake is empty: generating 7 days of demo history and materializing them"
  $BIN/seqctl demo-data --users 2000 --days 7 --events 200000
  $BIN/seqctl materialize --days 7 --record
fi

# Live traffic for the stream: a slow, endless demo producer (same shape and faults as demo-data).
if $BIN/seqctl --help 2>/dev/null | grep -q " produce"; then
  $BIN/seqctl produce --source user_engagements --rate 20 --duration 1000000 > .data/logs/produce.log 2>&1 &
  pids+=($!)
fi

if $BIN/seqctl --help 2>/dev/null | grep -q " serve"; then
  $BIN/seqctl serve > .data/logs/serve.log 2>&1 &
  pids+=($!)
  echo "serving API on http://127.0.0.1:8000"
fi

echo "Dagster UI on http://127.0.0.1:3000"
$BIN/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000
