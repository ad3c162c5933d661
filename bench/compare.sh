#!/usr/bin/env bash
# Runs the same load on a Tidings relay and on Redis (appendfsync always) and prints a table
# and, last, `ratio tidings/redis: X.XX` (online messages/s, Redis at 1 KiB payloads). Before
# that line come `ratio tidings/redis at equal bytes: X.XX` (Redis at 16,000-byte payloads,
# the bytes every Tidings message moves) and `relay CPU per message / floor: X.XX` (the
# online run's relay CPU against `tidings-bench --floor`, measured in the same run). Before
# those, from the floor's "QUIC at best": the lowest `relay CPU per message / floor` and the
# highest ratio at equal bytes (relay on one core) that QUIC leaves reachable on this machine.
#
#   bench/compare.sh [--quick]        (BENCH_BIN=DIR: use the binaries in DIR, no build)
#
# It installs redis-server from the distribution's packages if missing, starts Redis and
# the relays on free loopback ports in a temporary dir, builds the release binaries, runs
# both targets with the same parameters (an online run and an offline store-then-drain run
# each), the online run on Redis with 16,000-byte payloads, then the online run again over
# the relay's TCP bindings (HTTP/2, WebSocket), and stops everything it started on exit.
# With 2 cores or more, servers run on core 0 and the load generator on core 1 (taskset). --quick finishes within 3 minutes on 2
# cores once the release build is warm (a cold release build of the workspace takes longer,
# about 5-8 minutes on 2 cores). Everything stays on 127.0.0.1.
set -euo pipefail
# Errors from the bench are one line, not a backtrace.
export RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0

cd "$(dirname "$0")/.."
QUICK=0
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "unknown argument: $arg (use --quick or nothing)" >&2; exit 2 ;;
    esac
done

# The default load of the benchmark issue: 100 senders to 100 recipients, 1 KiB payloads,
# one message in flight per sender. Offline runs stay under the relay's quota of 128
# pending messages per queue.
COMMON=(--senders 100 --recipients 100 --in-flight 1)
PAYLOAD=(--payload 1024)
# What a Tidings message moves: its body is always padded to 16,000 bytes.
EQUAL_PAYLOAD=(--payload 16000)
# A paced run offers RATE messages/s in total, below both servers' saturation, for latency
# that is not queueing behind a backlog.
RATE=500
if [ "$QUICK" = 1 ]; then
    MESSAGES=3000; OFFLINE_MESSAGES=3000; PACED_MESSAGES=1500; IDLE=500; CONNECT=200
else
    MESSAGES=30000; OFFLINE_MESSAGES=10000; PACED_MESSAGES=10000; IDLE=2000; CONNECT=1000
fi

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "need root (or sudo) to run: $*" >&2; return 1; fi
}
if ! command -v redis-server >/dev/null; then
    echo "installing redis-server ..." >&2
    as_root apt-get update -qq >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >&2
fi

# Servers (relay, Redis) on core 0, the load generator on core 1, so that neither steals the
# other's CPU. Empty (not pinned) on one core or without taskset.
SERVER=(); LOAD=(); PINNING="not pinned (fewer than 2 cores, or no taskset)"
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    SERVER=(taskset -c 0); LOAD=(taskset -c 1)
    PINNING="servers on core 0, load generator on core 1 (taskset)"
fi

WORK=$(mktemp -d -t tidings-compare-XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    local port
    for _ in $(seq 1 200); do
        port=$((20000 + RANDOM % 30000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"; return 0
        fi
    done
    echo "no free port found" >&2; return 1
}

if [ -n "${BENCH_BIN:-}" ]; then
    # BENCH_BIN=DIR: binaries built elsewhere (e.g. the commit before a change), no build.
    BIN=$BENCH_BIN
else
    echo "building (release) ..." >&2
    cargo build --release -q -p tidings-bench -p tidings-relay >&2
    TARGET_DIR=$(cargo metadata --format-version 1 --no-deps 2>/dev/null \
        | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
    BIN="${TARGET_DIR:-target}/release"
fi

# Redis, durable like the relay: every write in the append-only file, fsynced before the
# reply; no RDB snapshots.
REDIS_PORT=$(free_port)
mkdir -p "$WORK/redis"
${SERVER[@]+"${SERVER[@]}"} redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK/redis" \
    --appendonly yes --appendfsync always --save "" --daemonize no \
    --logfile "$WORK/redis/redis.log" &
PIDS+=($!)
for _ in $(seq 1 100); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
    sleep 0.1
done
redis-cli -p "$REDIS_PORT" ping >/dev/null

# Every client of the bench comes from 127.0.0.1, which a relay's per-address shares would
# hold to 32 connections: the relays here get shares large enough for the whole load.
cp bench/one-address.toml "$WORK/shares.toml"

# A fresh relay per run; prints its address on stdout.
start_relay() { # $1: name
    local dir="$WORK/$1"
    mkdir -p "$dir"
    ${SERVER[@]+"${SERVER[@]}"} "$BIN/tidings-relay" --listen 127.0.0.1:0 --data-dir "$dir/data" --config "$WORK/shares.toml" \
        >"$dir/stdout" 2>"$dir/relay.log" &
    RELAY_PID=$!
    PIDS+=("$RELAY_PID")
    RELAY_DIR="$dir/data"
    RELAY_ADDRESS=""
    for _ in $(seq 1 300); do
        RELAY_ADDRESS=$(sed -n 's/^relay address: //p' "$dir/stdout" | head -n 1)
        [ -n "$RELAY_ADDRESS" ] && return 0
        kill -0 "$RELAY_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "the relay did not print its address; its log:" >&2
    tail -n 20 "$dir/relay.log" >&2
    return 1
}
stop_relay() {
    kill "$RELAY_PID" 2>/dev/null || true
    wait "$RELAY_PID" 2>/dev/null || true
}

run_tidings() { # $1: name, rest: bench arguments
    local name=$1; shift
    start_relay "$name"
    echo "tidings $name: $*" >&2
    ${LOAD[@]+"${LOAD[@]}"} "$BIN/tidings-bench" --target tidings --relay "$RELAY_ADDRESS" \
        --relay-pid "$RELAY_PID" --relay-data-dir "$RELAY_DIR" "${COMMON[@]}" "${PAYLOAD[@]}" "$@" \
        | tee "$WORK/tidings-$name.json" >&2
    stop_relay
}
run_redis() { # $1: name, rest: bench arguments (a --payload of their own, or 1 KiB)
    local name=$1; shift
    local payload=("${PAYLOAD[@]}")
    case " $* " in *" --payload "*) payload=() ;; esac
    echo "redis $name: $*" >&2
    ${LOAD[@]+"${LOAD[@]}"} "$BIN/tidings-bench" --target redis --redis "127.0.0.1:$REDIS_PORT" \
        "${COMMON[@]}" ${payload[@]+"${payload[@]}"} "$@" | tee "$WORK/redis-$name.json" >&2
}

ONLINE=(--messages "$MESSAGES" --idle-clients "$IDLE" --connect-rate "$CONNECT")
OFFLINE=(--messages "$OFFLINE_MESSAGES" --offline --idle-clients 0 --connect-rate 0)
PACED=(--messages "$PACED_MESSAGES" --rate "$RATE" --idle-clients 0 --connect-rate 0)
# The cost floor (issue 19), on the servers' core and disk, before the loads.
echo "floor: the per-message work no design can avoid" >&2
${SERVER[@]+"${SERVER[@]}"} "$BIN/tidings-bench" --floor --floor-dir "$WORK" \
    | tee "$WORK/floor.json" >&2
run_tidings online "${ONLINE[@]}"
run_redis online "${ONLINE[@]}"
# Equal bytes: Redis moving 16,000-byte payloads, as every Tidings message does.
run_redis online-equal --messages "$MESSAGES" --idle-clients 0 --connect-rate 0 "${EQUAL_PAYLOAD[@]}"
run_tidings paced "${PACED[@]}"
run_redis paced "${PACED[@]}"
run_tidings offline "${OFFLINE[@]}"
run_redis offline "${OFFLINE[@]}"
# The TCP bindings (issue 15), the same online load: HTTP/2 and WebSocket over TLS over TCP.
run_tidings online-h2 "${ONLINE[@]}" --binding h2
run_tidings online-ws "${ONLINE[@]}" --binding ws

echo
echo "machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
echo "pinning: $PINNING"
echo "load: ${COMMON[*]} ${PAYLOAD[*]} (Tidings bodies padded to 16,000 bytes; Redis also at 16,000); online ${MESSAGES} messages (+${IDLE} idle clients, ${CONNECT} connections);" \
    "paced ${PACED_MESSAGES} at ${RATE}/s; offline ${OFFLINE_MESSAGES}"
"$BIN/tidings-bench" --table "$WORK"/tidings-*.json "$WORK"/redis-*.json "$WORK/floor.json"
