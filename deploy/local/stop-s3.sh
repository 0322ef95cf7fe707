#!/usr/bin/env bash
# Stop the moto server started by start-s3.sh (its data, kept in memory, goes with it).
#
#   deploy/local/stop-s3.sh [-d DIR]        # default ./.nsdist-local, or $LOCAL_CLUSTER_DIR
set -euo pipefail

DIR=${LOCAL_CLUSTER_DIR:-.nsdist-local}
while getopts "d:h" opt; do
  case $opt in
    d) DIR=$OPTARG ;;
    *) sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
done
[ -f "$DIR/moto.pid" ] || { echo "stop-s3: no $DIR/moto.pid" >&2; exit 0; }
pid=$(cat "$DIR/moto.pid")
if [[ $pid =~ ^[0-9]+$ ]]; then
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  # Half a second of grace: moto keeps nothing worth a slow exit (it takes ~2 s on SIGTERM).
  for _ in $(seq 5); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
fi
rm -f "$DIR/moto.pid"
echo "stop-s3: stopped the moto server (pid $pid)" >&2
