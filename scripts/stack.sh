#!/usr/bin/env bash
# The scale-out stack on one machine, everything on loopback and free ports:
#   Redis (Celery broker and result backend), a throwaway PostgreSQL cluster (the Dagster instance
#   every process shares), moto's S3 server (the lake; or a given S3), K dagster-celery workers,
#   and a DAGSTER_HOME whose dagster.yaml keeps the instance in Postgres with the warm run launcher.
#
#   scripts/stack.sh up [--workers K] [--buckets B] [--dir DIR]   # prints the environment to use
#   scripts/stack.sh down [--dir DIR]
#   scripts/stack.sh env [--dir DIR]                                # prints it again
#
# `make stack-up` / `make stack-down` run these (STACK_WORKERS, STACK_BUCKETS, STACK_DIR). The state
# (pids, logs, env.sh, DAGSTER_HOME) lives in DIR (default .data/stack). With SEQ_LAKE_URI and
# SEQ_STORAGE_OPTIONS already set to an s3:// lake, no moto is started and those are used.
# PostgreSQL refuses to run as root: as root its cluster is created and run as the postgres user,
# in a folder of its own under /tmp. See docs/workers.md.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$PWD
BIN=$REPO/.venv/bin
cmd=${1:-}
shift || true
WORKERS=${STACK_WORKERS:-2}
BUCKETS=${STACK_BUCKETS:-${SEQ_USER_BUCKETS:-2}}
DIR=${STACK_DIR:-$REPO/.data/stack}
while [ $# -gt 0 ]; do
  case "$1" in
    --workers) WORKERS=$2; shift 2 ;;
    --buckets) BUCKETS=$2; shift 2 ;;
    --dir) DIR=$2; shift 2 ;;
    *) echo "stack.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)

free_port() { "$BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pg() { ls -d /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -1 || command -v "$1"; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
wait_for() {  # wait_for WHAT SECONDS COMMAND...
  local what=$1 secs=$2; shift 2
  for _ in $(seq $((secs * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "stack.sh: $what not ready after ${secs}s (logs in $DIR/logs)" >&2; return 1
}
# A background child in a session of its own (setsid), so `down` stops it and everything it started.
start_bg() {  # start_bg NAME COMMAND...
  local name=$1; shift
  setsid "$@" >>"$DIR/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$DIR/pids/$name"
}
stop_pid() {  # SIGTERM to the session, SIGKILL 10 s later (a child started with SIGINT ignored keeps it)
  local pid=$1
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
}

down() {
  if [ -d "$DIR/pids" ]; then
    for f in "$DIR"/pids/worker-* "$DIR"/pids/moto "$DIR"/pids/redis; do
      [ -f "$f" ] && stop_pid "$(cat "$f")" && rm -f "$f"
    done
  fi
  if [ -f "$DIR/pgdir" ]; then
    pgdir=$(cat "$DIR/pgdir")
    as_pg "$(pg pg_ctl)" -D "$pgdir/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$pgdir" "$DIR/pgdir"
  fi
  echo "stack stopped ($DIR)"
}

up() {
  [ -f "$DIR/env.sh" ] && [ -f "$DIR/pids/redis" ] && kill -0 "$(cat "$DIR/pids/redis")" 2>/dev/null && {
    echo "stack.sh: already up ($DIR); 'scripts/stack.sh down' first" >&2; exit 1; }
  mkdir -p "$DIR/logs" "$DIR/pids"
  trap 'echo "stack.sh: start failed, stopping what started" >&2; down' ERR

  # Redis
  redis_port=$(free_port)
  start_bg redis redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$DIR"
  wait_for redis 30 "$BIN/python" -c "import redis; redis.Redis(port=$redis_port).ping()"
  broker=redis://127.0.0.1:$redis_port/0

  # PostgreSQL: a throwaway cluster, trust on loopback only.
  pgdir=$(mktemp -d /tmp/seq-stack-pg.XXXXXX)
  echo "$pgdir" > "$DIR/pgdir"
  chmod 755 "$pgdir"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$pgdir"
  pg_port=$(free_port)
  as_pg "$(pg initdb)" -D "$pgdir/data" -U postgres -A trust --no-sync -E UTF8 >"$DIR/logs/initdb.log" 2>&1
  as_pg "$(pg pg_ctl)" -D "$pgdir/data" -l "$pgdir/postgres.log" -w -t 60 \
    -o "-p $pg_port -k $pgdir -c listen_addresses=127.0.0.1 -c max_connections=200" start >>"$DIR/logs/postgres.log" 2>&1
  as_pg "$(pg createdb)" -h 127.0.0.1 -p "$pg_port" -U postgres dagster
  pg_url="postgresql+psycopg2://postgres@127.0.0.1:$pg_port/dagster"

  # The lake: a given s3:// lake, or moto's S3 on loopback with a fresh bucket.
  if [[ "${SEQ_LAKE_URI:-}" == s3://* && -n "${SEQ_STORAGE_OPTIONS:-}" ]]; then
    lake=$SEQ_LAKE_URI options=$SEQ_STORAGE_OPTIONS
  else
    s3_port=$(free_port)
    start_bg moto "$BIN/moto_server" -H 127.0.0.1 -p "$s3_port"
    wait_for moto 30 "$BIN/python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$s3_port/')"
    options="{\"AWS_ENDPOINT_URL\": \"http://127.0.0.1:$s3_port\", \"AWS_ACCESS_KEY_ID\": \"testing\", \"AWS_SECRET_ACCESS_KEY\": \"testing\", \"AWS_REGION\": \"us-east-1\", \"AWS_ALLOW_HTTP\": \"true\"}"
    "$BIN/python" -c "import boto3; boto3.client('s3', endpoint_url='http://127.0.0.1:$s3_port', aws_access_key_id='testing', aws_secret_access_key='testing', region_name='us-east-1').create_bucket(Bucket='seq-lake')"
    lake=s3://seq-lake/lake
  fi

  # DAGSTER_HOME: the dev instance settings (warm run launcher, run monitoring...) plus Postgres.
  home=$DIR/dagster_home
  mkdir -p "$home"
  { cat scripts/dagster.yaml
    printf '# Runs, events and schedules in Postgres: every worker and daemon shares the instance.\n'
    printf 'storage:\n  postgres:\n    postgres_url: "%s"\n' "$pg_url"
  } > "$home/dagster.yaml"

  cat > "$DIR/env.sh" <<ENV
export DAGSTER_HOME='$home'
export SEQ_LAKE_URI='$lake'
export SEQ_STORAGE_OPTIONS='$options'
export SEQ_LANDING_DIR='${SEQ_LANDING_DIR:-$REPO/.data/landing}'
export SEQ_EXECUTOR=celery
export SEQ_CELERY_BROKER='$broker'
export SEQ_CELERY_BACKEND='$broker'
export SEQ_USER_BUCKETS='$BUCKETS'
ENV
  # shellcheck disable=SC1091
  . "$DIR/env.sh"

  # K workers, one step at a time each, with the same settings as the code location.
  names=()
  for i in $(seq 0 $((WORKERS - 1))); do
    name="seq-worker-$i@127.0.0.1"
    names+=("$name")
    PATH="$BIN:$PATH" start_bg "worker-$i" "$BIN/celery" -A dagster_celery.app -b "$broker" --result-backend "$broker" \
      worker -Q dagster -n "$name" --concurrency=1 --prefetch-multiplier=1 --without-gossip --without-mingle -l INFO
  done
  wait_for "$WORKERS celery workers" 120 "$BIN/python" -c "
from celery import Celery
replies = Celery('ping', broker='$broker').control.ping(timeout=1.0) or []
up = {n for r in replies for n in r}
raise SystemExit(0 if set('${names[*]}'.split()) <= up else 1)"
  trap - ERR
  echo "stack up: redis :$redis_port, postgres :$pg_port, lake $lake, $WORKERS workers ($DIR/logs)"
  echo "# the environment (also in $DIR/env.sh):"
  cat "$DIR/env.sh"
}

case "$cmd" in
  up) up ;;
  down) down ;;
  env) cat "$DIR/env.sh" ;;
  *) echo "usage: scripts/stack.sh up|down|env [--workers K] [--buckets B] [--dir DIR]" >&2; exit 2 ;;
esac
