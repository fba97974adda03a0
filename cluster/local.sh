#!/usr/bin/env bash
# A real multi-node Ray cluster on this machine, for developing `ray job submit` workflows:
# one head and N worker nodes, each its own `ray start` process tree, with token auth on. Nodes are given
# 127.0.0.1; Ray maps that to this machine's own address so the nodes can reach each other, and the
# dashboard (the job API) listens on loopback only.
#
#   cluster/local.sh up        # head + 2 workers; prints the address and how to submit
#   source "$(cluster/local.sh env)"   # RAY_ADDRESS, RAY_AUTH_MODE, RAY_AUTH_TOKEN_PATH for the ray CLI
#   ray job submit --runtime-env jobs/runtime_env.yaml --working-dir . -- python jobs/finetune.py ...
#   cluster/local.sh status
#   cluster/local.sh down      # stops only the processes this script started
#
# Settings (environment): MOATFORGE_LOCAL_CLUSTER_DIR (state: token, pids, logs; /tmp/moatforge-local-cluster),
# MOATFORGE_LOCAL_WORKERS (2), MOATFORGE_LOCAL_HEAD_CPUS (0: the head schedules no work, as on a real cluster), MOATFORGE_LOCAL_WORKER_CPUS (2),
# MOATFORGE_LOCAL_RAY_TMP (root of the nodes' Ray temp dirs <root>/h, <root>/w1, ...; /tmp/mfray-<GCS port>), MOATFORGE_LOCAL_GCS_PORT (6390), MOATFORGE_LOCAL_DASHBOARD_PORT (8275), MOATFORGE_LOCAL_OBJECT_STORE_MB (256),
# RAY (the ray executable; default .venv/bin/ray, else ray on PATH).
#
# Ports differ from Ray's defaults so the cluster can live beside a `ray.init()` on the same machine, and `down`
# never runs `ray stop` (which would stop every Ray on the machine): it ends the process groups it recorded.
#
# Token authentication (Ray >= 2.52; on by default for new local clusters in 2.60): `up` writes a fresh token to
# $STATE/auth_token (mode 600) and starts every node with RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=that file.
# Clients need the same two variables (or RAY_AUTH_TOKEN=<the token>); `env` prints a file that sets them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${MOATFORGE_LOCAL_CLUSTER_DIR:-/tmp/moatforge-local-cluster}"
WORKERS="${MOATFORGE_LOCAL_WORKERS:-2}"
HEAD_CPUS="${MOATFORGE_LOCAL_HEAD_CPUS:-0}"
WORKER_CPUS="${MOATFORGE_LOCAL_WORKER_CPUS:-2}"
GCS_PORT="${MOATFORGE_LOCAL_GCS_PORT:-6390}"
DASHBOARD_PORT="${MOATFORGE_LOCAL_DASHBOARD_PORT:-8275}"
OBJECT_STORE_MB="${MOATFORGE_LOCAL_OBJECT_STORE_MB:-256}"
# Ray's session directory holds unix sockets, whose paths may not exceed 107 bytes: keep its root short.
RAY_TMP="${MOATFORGE_LOCAL_RAY_TMP:-/tmp/mfray-$GCS_PORT}"
if [[ -z "${RAY:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/ray" ]]; then RAY="$ROOT/.venv/bin/ray"; else RAY="$(command -v ray || true)"; fi
fi
PY="$(dirname "$RAY")/python"
[[ -x "$PY" ]] || PY="$(command -v python3)"

die() {
  echo "local.sh: $*" >&2
  # A half-started cluster is stopped rather than left running behind the error.
  if [[ -n "${STARTING:-}" ]]; then STARTING=; down >&2; fi
  exit 1
}

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Processes a recorded group still holds (the `ray start --block` leader, raylet, GCS, workers...).
group_alive() { pgrep -g "$1" >/dev/null 2>&1; }

start_node() { # name, then `ray start` arguments
  local name="$1"; shift
  # setsid: each node is its own process group (pgid = the pid recorded), so `down` can end exactly it.
  # --block keeps `ray start` in the foreground as the group's leader; SIGTERM makes it stop its node.
  setsid "$RAY" start --block --disable-usage-stats "$@" >"$STATE/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/pids/$name"
}

count_nodes() { # alive nodes, through the head's state API (0 while it is not up)
  RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$STATE/auth_token" "$PY" - "$DASHBOARD_PORT" <<'EOF' 2>/dev/null || echo 0
import sys
from ray.util.state import list_nodes
nodes = list_nodes(address=f"http://127.0.0.1:{sys.argv[1]}", filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)
print(len(nodes))
EOF
}

dashboard_ready() {
  "$PY" - "$DASHBOARD_PORT" "$STATE/auth_token" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
token = open(sys.argv[2]).read().strip()
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/api/jobs/", headers={"Authorization": f"Bearer {token}"})
urllib.request.urlopen(req, timeout=3).read()
EOF
}

write_env() {
  cat >"$STATE/env" <<EOF
# source this file: the ray CLI then talks to the local moatforge cluster
export RAY_ADDRESS=http://127.0.0.1:$DASHBOARD_PORT
export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN_PATH=$STATE/auth_token
EOF
}

up() {
  [[ -n "$RAY" && -x "$RAY" ]] || die "no ray executable (run 'make setup', or set RAY=/path/to/ray)"
  if alive "$STATE/pids/head"; then
    die "a cluster is already up (state in $STATE); run '$0 down' first"
  fi
  ((${#RAY_TMP} <= 36)) || die "MOATFORGE_LOCAL_RAY_TMP=$RAY_TMP is too long for Ray's socket paths (36 bytes at most)"
  rm -rf "$STATE" "$RAY_TMP"
  mkdir -p "$STATE/pids" "$STATE/logs"
  chmod 700 "$STATE"
  (umask 077 && "$PY" -c "import secrets; print(secrets.token_hex(32))" >"$STATE/auth_token")
  write_env
  STARTING=1
  export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$STATE/auth_token"
  unset RAY_AUTH_TOKEN RAY_ADDRESS
  # Job entrypoints (`python jobs/...`) run in the nodes' environment: make `python` the one Ray runs on,
  # as on a real cluster's image.
  export PATH="$(dirname "$RAY"):$PATH"
  local common=(--object-store-memory=$((OBJECT_STORE_MB * 1024 * 1024)) --num-gpus=0)
  # Each node's dashboard agent listens on its own port: several nodes share this machine's interfaces.
  # Each node has its own temp root, as separate machines would: nodes of one session under one root share
  # runtime_resources/, and one node's runtime-env agent re-extracting or deleting an uploaded working_dir
  # would pull it from under a job running on another (seen: the job's cwd vanished, then `import torch` died).
  start_node head --head --node-ip-address=127.0.0.1 --port="$GCS_PORT" \
    --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" --include-dashboard=true \
    --dashboard-agent-listen-port=$((DASHBOARD_PORT + 100)) --ray-client-server-port=$((GCS_PORT + 100)) \
    --num-cpus="$HEAD_CPUS" --temp-dir="$RAY_TMP/h" "${common[@]}"
  local i deadline
  deadline=$((SECONDS + 90))
  until [[ "$(count_nodes)" -ge 1 ]]; do
    alive "$STATE/pids/head" || { tail -n 40 "$STATE/logs/head.log" >&2; die "the head node exited (log: $STATE/logs/head.log)"; }
    ((SECONDS < deadline)) || die "the head node did not come up in 90 s (log: $STATE/logs/head.log)"
    sleep 1
  done
  # One worker at a time: `ray start` processes sharing a session directory pick ports and log file names by
  # looking at what is free, so two starting at once can collide.
  for ((i = 1; i <= WORKERS; i++)); do
    start_node "worker$i" --address="127.0.0.1:$GCS_PORT" --node-ip-address=127.0.0.1 \
      --dashboard-agent-listen-port=$((DASHBOARD_PORT + 100 + i)) --num-cpus="$WORKER_CPUS" \
      --temp-dir="$RAY_TMP/w$i" "${common[@]}"
    deadline=$((SECONDS + 90))
    until [[ "$(count_nodes)" -ge $((i + 1)) ]]; do
      alive "$STATE/pids/worker$i" || { tail -n 40 "$STATE/logs/worker$i.log" >&2; die "worker$i exited (log: $STATE/logs/worker$i.log)"; }
      ((SECONDS < deadline)) || die "worker$i did not join in 90 s (logs: $STATE/logs)"
      sleep 1
    done
  done
  deadline=$((SECONDS + 60))
  until dashboard_ready; do
    ((SECONDS < deadline)) || die "the job API did not answer in 60 s (log: $STATE/logs/head.log)"
    sleep 1
  done
  STARTING=
  echo "local.sh: Ray cluster up: 1 head + $WORKERS workers, $((HEAD_CPUS + WORKERS * WORKER_CPUS)) CPUs, token auth on"
  echo "  dashboard / job address: http://127.0.0.1:$DASHBOARD_PORT   GCS: 127.0.0.1:$GCS_PORT"
  echo "  source $STATE/env   # then: ray job submit --working-dir . -- python jobs/finetune.py ..."
}

down() {
  [[ -d "$STATE/pids" ]] || { echo "local.sh: no cluster state in $STATE"; return 0; }
  local name pid deadline
  # Workers first, head last, so no worker logs a lost head as a failure.
  for name in $(ls "$STATE/pids" | grep -v '^head$') head; do
    [[ -f "$STATE/pids/$name" ]] || continue
    pid="$(cat "$STATE/pids/$name")"
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 20))
    while group_alive "$pid" && ((SECONDS < deadline)); do sleep 0.5; done
    # Whatever of the node ignored SIGTERM (a stuck worker process) goes with the group.
    if group_alive "$pid"; then kill -KILL -- "-$pid" 2>/dev/null || true; fi
    rm -f "$STATE/pids/$name"
  done
  echo "local.sh: cluster down (logs kept in $STATE/logs and $RAY_TMP/*/session_latest/logs)"
}

status() {
  local name
  [[ -d "$STATE/pids" ]] || { echo "local.sh: no cluster"; return 1; }
  for name in $(ls "$STATE/pids"); do
    if alive "$STATE/pids/$name"; then echo "$name: running (pgid $(cat "$STATE/pids/$name"))"; else echo "$name: dead"; fi
  done
  echo "alive nodes (GCS): $(count_nodes)"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) [[ -f "$STATE/env" ]] || die "no cluster state in $STATE (run '$0 up')"; echo "$STATE/env" ;;
  *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
