#!/usr/bin/env bash
# Stop what start-cluster.sh started: the scheduler and workers named by pid files in DIR.
#
#   deploy/local/stop-cluster.sh [-d DIR]        # default ./.nsdist-local, or $LOCAL_CLUSTER_DIR
#
# SIGTERM to each process group (workers first, so they do not log the scheduler's departure as
# an error), SIGKILL whatever is left after 10 seconds; then the pid files are removed.
set -euo pipefail

DIR=${LOCAL_CLUSTER_DIR:-.nsdist-local}
while getopts "d:h" opt; do
  case $opt in
    d) DIR=$OPTARG ;;
    *) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
done
[ -d "$DIR" ] || { echo "stop-cluster: no directory $DIR" >&2; exit 0; }

signal() {  # signal SIG PID: the process group if PID leads one (setsid), else the process
  kill "-$1" -- "-$2" 2>/dev/null || kill "-$1" "$2" 2>/dev/null || true
}

shopt -s nullglob
pidfiles=("$DIR"/worker-*.pid "$DIR"/scheduler.pid)
pids=()
for f in "${pidfiles[@]}"; do
  pid=$(cat "$f")
  [[ $pid =~ ^[0-9]+$ ]] || continue
  pids+=("$pid")
  signal TERM "$pid"
done

for _ in $(seq 100); do
  alive=0
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
  [ $alive = 0 ] && break
  sleep 0.1
done
for pid in "${pids[@]}"; do signal KILL "$pid"; done

rm -f "${pidfiles[@]}" "$DIR/scheduler.json"
echo "stop-cluster: stopped ${#pids[@]} process(es) from $DIR" >&2
