#!/usr/bin/env bash
# Start a real Dask cluster on this machine: one `dask scheduler` and N `dask worker` processes on
# 127.0.0.1, in the background, the same command lines the Kubernetes manifests run.
#
#   deploy/local/start-cluster.sh [-n WORKERS] [-t THREADS] [-d DIR]
#
# Prints the scheduler address as the only line on stdout, so
#   export DASK_SCHEDULER_ADDRESS=$(deploy/local/start-cluster.sh -n 4)
#   nsdist train --config jobs/s3.yaml          # nsdist honours DASK_SCHEDULER_ADDRESS
#   deploy/local/stop-cluster.sh
# Logs, pid files and the scheduler file go to DIR (default ./.nsdist-local, or $LOCAL_CLUSTER_DIR).
# Workers inherit this shell's environment: run `eval "$(deploy/local/start-s3.sh)"` first to give
# them the local S3 endpoint. PYTHON selects the interpreter that has nsdist installed (default python3).
#
# Variables here deliberately avoid the NSDIST_ prefix: nsdist reads every NSDIST_* variable as a
# config key and rejects unknown ones.
set -euo pipefail

WORKERS=2
THREADS=1   # one thread per worker process: the numba kernel is deterministic per task and
            # releases the GIL; parallelism comes from more processes (DESIGN decision 7).
DIR=${LOCAL_CLUSTER_DIR:-.nsdist-local}
PYTHON=${PYTHON:-python3}
TIMEOUT=${LOCAL_CLUSTER_TIMEOUT:-60}

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while getopts "n:t:d:h" opt; do
  case $opt in
    n) WORKERS=$OPTARG ;;
    t) THREADS=$OPTARG ;;
    d) DIR=$OPTARG ;;
    *) usage ;;
  esac
done

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
[ -e "$DIR/.gitignore" ] || echo "*" >"$DIR/.gitignore"   # logs and pids never get committed
if compgen -G "$DIR/scheduler.pid" >/dev/null || compgen -G "$DIR/worker-*.pid" >/dev/null; then
  echo "start-cluster: $DIR already has pid files; run deploy/local/stop-cluster.sh -d $DIR first" >&2
  exit 1
fi

# setsid: each process leads its own process group, so stop-cluster.sh can end a nanny together
# with the worker process it spawned, and closing this terminal does not kill the cluster.
SETSID=$(command -v setsid || true)
launch() {  # launch NAME ARGS...: background process with log and pid file
  local name=$1; shift
  $SETSID "$PYTHON" "$@" </dev/null >"$DIR/$name.log" 2>&1 &
  echo $! >"$DIR/$name.pid"
}

rm -f "$DIR/scheduler.json" "$DIR"/scheduler.log "$DIR"/worker-*.log
# Port 0 lets the OS pick free ports, so several clusters (or a test run) never collide.
launch scheduler -m distributed.cli.dask_scheduler --host 127.0.0.1 --port 0 \
  --dashboard-address 127.0.0.1:0 --scheduler-file "$DIR/scheduler.json"
# Workers start at once: they wait for the scheduler file themselves, so the start-ups overlap.
# --death-timeout: a worker whose scheduler is gone exits instead of lingering.
for i in $(seq 0 $((WORKERS - 1))); do
  launch "worker-$i" -m distributed.cli.dask_worker --scheduler-file "$DIR/scheduler.json" \
    --host 127.0.0.1 --nthreads "$THREADS" --nworkers 1 --name "worker-$i" --no-dashboard \
    --local-directory "$DIR/worker-$i" --death-timeout 30
done

# Return only once every worker has joined (a job started right after sees the whole cluster);
# fail at once, with the logs, if a process dies on the way.
WAIT='
import json, os, sys, time
directory, n, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + timeout
names = ["scheduler"] + [f"worker-{i}" for i in range(n)]
pids = {name: int(open(os.path.join(directory, name + ".pid")).read()) for name in names}

def check():
    for name, pid in pids.items():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            sys.exit(f"start-cluster: {name} exited while starting")
    if time.monotonic() > deadline:
        sys.exit(f"start-cluster: the cluster did not start within {timeout:.0f} s")

while True:  # written with a plain json.dump: retry partial reads
    check()
    try:
        with open(os.path.join(directory, "scheduler.json")) as f:
            info = json.load(f)
        break
    except (OSError, ValueError):
        time.sleep(0.05)
from distributed import Client
with Client(info["address"], timeout=max(1.0, deadline - time.monotonic())) as client:
    while len(client.scheduler_info()["workers"]) < n:
        check()
        time.sleep(0.05)
print(info["address"], info.get("services", {}).get("dashboard", ""))
'
if ! INFO=$("$PYTHON" -c "$WAIT" "$DIR" "$WORKERS" "$TIMEOUT"); then
  "$(dirname "$0")/stop-cluster.sh" -d "$DIR" >/dev/null 2>&1 || true
  for f in "$DIR"/*.log; do echo "--- $f" >&2; tail -n 15 "$f" >&2; done
  exit 1
fi
read -r ADDRESS DASHBOARD <<<"$INFO"

echo "start-cluster: $WORKERS worker(s) x $THREADS thread(s) joined $ADDRESS; logs and pids in $DIR" >&2
[ -n "$DASHBOARD" ] && echo "start-cluster: dashboard http://127.0.0.1:$DASHBOARD/status" >&2
echo "$ADDRESS"
