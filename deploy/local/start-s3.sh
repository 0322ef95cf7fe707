#!/usr/bin/env bash
# Start a local S3 (moto's server) on 127.0.0.1 in the background and print the environment that
# points nsdist, s3fs and the AWS SDKs at it:
#
#   eval "$(deploy/local/start-s3.sh [-p PORT] [-b BUCKET]... [-d DIR])"
#   deploy/local/stop-s3.sh [-d DIR]
#
# The keys are dummies (moto accepts any): real credentials never belong in these scripts, in job
# specs or in images. -b creates a bucket (repeatable); the default port is a free one. Log and pid
# file go to DIR (default ./.nsdist-local, or $LOCAL_CLUSTER_DIR). PYTHON selects the interpreter
# that has moto[server] installed (default python3). Moto keeps everything in memory: stopping the
# server forgets all buckets.
set -euo pipefail

PORT=""
BUCKETS=()
DIR=${LOCAL_CLUSTER_DIR:-.nsdist-local}
PYTHON=${PYTHON:-python3}

while getopts "p:b:d:h" opt; do
  case $opt in
    p) PORT=$OPTARG ;;
    b) BUCKETS+=("$OPTARG") ;;
    d) DIR=$OPTARG ;;
    *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
done

# On failure stdout says `false`, so that `eval "$(deploy/local/start-s3.sh)"` fails too.
fail() { echo "start-s3: $*" >&2; echo false; exit 1; }

"$PYTHON" -c 'import moto.server' 2>/dev/null \
  || fail "moto's server is not installed for $PYTHON; install it with: $PYTHON -m pip install 'moto[server]' (it comes with nsdist's test extra: pip install -e '.[test]')"

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
[ -e "$DIR/.gitignore" ] || echo "*" >"$DIR/.gitignore"   # logs and pids never get committed
if [ -f "$DIR/moto.pid" ] && kill -0 "$(cat "$DIR/moto.pid")" 2>/dev/null; then
  fail "a server from $DIR/moto.pid is running; run deploy/local/stop-s3.sh -d $DIR first"
fi
if [ -z "$PORT" ]; then
  PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
ENDPOINT="http://127.0.0.1:$PORT"

# `python -m moto.server` is the `moto_server` command, run by the interpreter chosen above.
$(command -v setsid || true) "$PYTHON" -m moto.server -H 127.0.0.1 -p "$PORT" </dev/null >"$DIR/moto.log" 2>&1 &
echo $! >"$DIR/moto.pid"

export AWS_ENDPOINT_URL=$ENDPOINT           # botocore >= 1.31, boto3, the AWS CLI
export FSSPEC_S3_ENDPOINT_URL=$ENDPOINT     # s3fs through fsspec's config, for any storage_options
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1

# Ready when it answers HTTP, then create the buckets through s3fs (an nsdist dependency).
"$PYTHON" - "$ENDPOINT" "${BUCKETS[@]}" <<'PY' || { tail -n 20 "$DIR/moto.log" >&2; "$(dirname "$0")/stop-s3.sh" -d "$DIR" >/dev/null 2>&1; fail "the server did not start (its log is above)"; }
import sys, time, urllib.error, urllib.request
endpoint, buckets = sys.argv[1], sys.argv[2:]
deadline = time.monotonic() + 30
while True:
    try:
        urllib.request.urlopen(endpoint + "/moto-api/", timeout=1).close()
        break
    except urllib.error.HTTPError:  # any HTTP answer means it is serving
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit(f"start-s3: moto server at {endpoint} did not answer within 30 s")
        time.sleep(0.1)
if buckets:
    import s3fs
    fs = s3fs.S3FileSystem(endpoint_url=endpoint, key="testing", secret="testing")
    for bucket in buckets:
        fs.mkdir(bucket)
PY

echo "start-s3: moto server on $ENDPOINT (pid $(cat "$DIR/moto.pid"), log $DIR/moto.log)${BUCKETS[*]:+, buckets: ${BUCKETS[*]}}" >&2
cat <<ENV
export AWS_ENDPOINT_URL=$ENDPOINT
export FSSPEC_S3_ENDPOINT_URL=$ENDPOINT
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export AWS_DEFAULT_REGION=us-east-1
ENV
