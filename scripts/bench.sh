#!/usr/bin/env bash
# Runs tether-bench's default scenario set against a release gateway on loopback, with a
# NATS server as the anchor, appending one JSON line per scenario to bench-results.jsonl
# (or $RESULTS) and printing a summary. Finishes within ~15 minutes by default.
#
#   scripts/bench.sh           # the default set (idle up to 10k edges)
#   scripts/bench.sh --full    # also idle with 50k edges
#
# Environment: DURATION (seconds per scenario, default 10), WARMUP (default 2), RESULTS,
# SERVICE_ADDR / EDGE_ADDR (default 127.0.0.1:31011 / 127.0.0.1:31012), NATS_PORT (4222),
# CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

FULL=0
for arg in "$@"; do
    case "$arg" in
        --full) FULL=1 ;;
        -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "unknown argument: $arg" >&2; exit 2 ;;
    esac
done

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
RESULTS=${RESULTS:-bench-results.jsonl}
SERVICE_ADDR=${SERVICE_ADDR:-127.0.0.1:31011}
EDGE_ADDR=${EDGE_ADDR:-127.0.0.1:31012}
NATS_PORT=${NATS_PORT:-4222}
TARGET=${CARGO_TARGET_DIR:-target}

# nats-server for the anchor.
if ! command -v nats-server >/dev/null 2>&1; then
    echo "== installing nats-server" >&2
    SUDO=""
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
            echo "nats-server is missing and we are not root (no sudo): install it first" >&2
            exit 1
        fi
    fi
    $SUDO apt-get update -qq
    $SUDO apt-get install -y nats-server
fi

echo "== building (release)" >&2
cargo build --release --locked -p tether-gateway -p tether-bench
GATEWAY="$TARGET/release/tether-gateway"
BENCH="$TARGET/release/tether-bench"

# Idle edges need an open file each in the gateway and in the bench: raise the soft
# limit as far as allowed (past the hard limit only as root).
WANT_NOFILE=$((FULL == 1 ? 120000 : 30000))
ulimit -n "$WANT_NOFILE" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "== open-file limit: $(ulimit -n)" >&2

GW_PID=""
NATS_PID=""
LOGDIR=$(mktemp -d)
cleanup() {
    set +e # the servers' exit statuses after SIGTERM are not ours
    for pid in $GW_PID $NATS_PID; do
        kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    done
    rm -rf "$LOGDIR"
}
trap cleanup EXIT INT TERM

wait_port() { # host:port, name, pid
    local host=${1%:*} port=${1##*:}
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return 0; fi
        if ! kill -0 "$3" 2>/dev/null; then break; fi
        sleep 0.1
    done
    echo "$2 did not start on $1; its log:" >&2
    cat "$LOGDIR/$2.log" >&2
    exit 1
}

echo "== starting the gateway ($SERVICE_ADDR / $EDGE_ADDR) and nats-server (127.0.0.1:$NATS_PORT)" >&2
RUST_LOG=warn "$GATEWAY" --service-listen "$SERVICE_ADDR" --edge-listen "$EDGE_ADDR" \
    >"$LOGDIR/gateway.log" 2>&1 &
GW_PID=$!
nats-server -a 127.0.0.1 -p "$NATS_PORT" >"$LOGDIR/nats.log" 2>&1 &
NATS_PID=$!
wait_port "$EDGE_ADDR" gateway "$GW_PID"
wait_port "127.0.0.1:$NATS_PORT" nats "$NATS_PID"

COMMON=(--service-addr "$SERVICE_ADDR" --edge-addr "$EDGE_ADDR" --duration "$DURATION"
    --warmup "$WARMUP" --nats-url "nats://127.0.0.1:$NATS_PORT" --gateway-pid "$GW_PID")
FAILED=0
LINES=()
run() {
    echo "== tether-bench $*" >&2
    local line
    if line=$("$BENCH" "$@" "${COMMON[@]}"); then
        echo "$line" >>"$RESULTS"
        LINES+=("$line")
    else
        echo "!! tether-bench $* failed" >&2
        FAILED=$((FAILED + 1))
    fi
    sleep 1 # let the gateway reap the run's connections
}

START=$(date +%s)
run rpc --concurrency 1 --anchor
run rpc --concurrency 64 --anchor
run rpc --concurrency 256 --anchor
run rpc --concurrency 64 --direction service-to-edge
run publish --window 64 --anchor
run publish --fire-and-forget --anchor
run stream --streams 1
run stream --streams 64
run stream --opens
run interference
run idle --edges 1000
run idle --edges 10000
if [ "$FULL" = 1 ]; then
    run idle --edges 50000 --connect-timeout 120
fi
END=$(date +%s)

echo
echo "== summary ($((END - START)) s; $FAILED failed; appended to $RESULTS)"
if command -v python3 >/dev/null 2>&1; then
    printf '%s\n' "${LINES[@]}" >"$LOGDIR/lines.jsonl"
    python3 - "$LOGDIR/lines.jsonl" <<'PY'
import json, sys

def f(v):
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    return str(v)

skip = {"scenario", "duration_secs", "warmup_secs", "ratio_note", "spread_note", "ops_note",
        "anchor", "ratio", "baseline", "first_error"}
lat = ("p50_us", "p99_us", "p999_us")
for line in open(sys.argv[1]):
    if not line.strip():
        continue
    r = json.loads(line)
    pad = " " * 13
    print(f"{r['scenario']:<13}", " ".join(f"{k}={f(v)}" for k, v in r.items() if k not in skip))
    if "anchor" in r:
        a = r["anchor"]
        print(pad, "nats:", f"ops_per_sec={f(a.get('ops_per_sec'))}",
              " ".join(f"{k}={f(a[k])}" for k in lat if k in a))
        print(pad, "ratio (>1: tether better):",
              " ".join(f"{k}={v:.2f}" for k, v in r["ratio"].items()))
    if "baseline" in r:
        b = r["baseline"]
        print(pad, "baseline:", " ".join(f"{k}={f(b[k])}" for k in lat if k in b))
PY
else
    printf '%s\n' "${LINES[@]}"
fi
exit "$FAILED"
