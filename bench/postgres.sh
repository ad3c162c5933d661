#!/usr/bin/env bash
# The same load on the PostgreSQL store with one relay process and with two (issue 19.5).
#
#   bench/postgres.sh [MESSAGES]     (default 10000)
#
# Starts a throwaway PostgreSQL cluster (.ci/postgres.sh; installs the distribution's
# PostgreSQL if missing and we are root), builds the release binaries, then:
#   sled: the same load on the default sled store, for reference;
#   one: tidings-bench starts one relay on a fresh database; 100 senders to 100 recipients;
#   two: two relay processes (one data directory, so one relay key; each its own port) on
#        another fresh database, and two tidings-bench runs at once, each with half the load
#        (50 to 50, MESSAGES/2) against its own process.
# It prints each run's JSON line(s) and, per run, the CPU PostgreSQL's processes used per
# message (the relay's own CPU is in the JSON). Stops everything it started on exit.
set -euo pipefail
export RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0
cd "$(dirname "$0")/.."
MESSAGES=${1:-10000}
HALF=$((MESSAGES / 2))
COMMON=(--payload 1024 --in-flight 1 --idle-clients 0 --connect-rate 0)

# shellcheck source=../.ci/postgres.sh
source .ci/postgres.sh
WORK=$(mktemp -d -t tidings-pgbench-XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    pg_stop
    rm -rf "$WORK"
}
trap cleanup EXIT
pg_start
[ -n "${TIDINGS_TEST_POSTGRES:-}" ] || { echo "no PostgreSQL: nothing to measure" >&2; exit 1; }
BASE=${TIDINGS_TEST_POSTGRES%/*}

cargo build --release --locked -q -p tidings-bench -p tidings-relay
BIN=target/release

psql_admin() { "$PG_BIN/psql" -q -X "$TIDINGS_TEST_POSTGRES" -c "$1" >/dev/null; }

# CPU ticks (user + system) of the cluster: the postmaster, the backends it reaped
# (its children's times), and the processes still running under it.
pg_ticks() {
    local pm total=0 pid
    pm=$(head -n 1 "$PG_DIR/data/postmaster.pid")
    read -r -a f < <(sed 's/^.*) //' "/proc/$pm/stat")
    # after "pid (comm) ", field 14 (utime) is index 11; stime 12, cutime 13, cstime 14
    total=$((f[11] + f[12] + f[13] + f[14]))
    for pid in $(pgrep -P "$pm"); do
        read -r -a f < <(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null || echo "")
        [ "${#f[@]}" -gt 12 ] && total=$((total + f[11] + f[12]))
    done
    echo "$total"
}
hz=$(getconf CLK_TCK)
# Backends of closed connections are counted once the postmaster has reaped them.
settle() { sleep 2; }
pg_us_per_msg() { # ticks_before ticks_after messages
    echo "postgres CPU us/message: $(( ($2 - $1) * 1000000 / hz / $3 ))"
}

echo "== sled, one relay process (for reference, same machine, same minute)" >&2
"$BIN/tidings-bench" "${COMMON[@]}" --senders 100 --recipients 100 --messages "$MESSAGES"

echo "== PostgreSQL, one relay process" >&2
psql_admin "CREATE DATABASE bench_one"
settle; before=$(pg_ticks)
"$BIN/tidings-bench" "${COMMON[@]}" --senders 100 --recipients 100 --messages "$MESSAGES" \
    --relay-arg=--store --relay-arg="$BASE/bench_one" | tee "$WORK/one.json"
settle; after=$(pg_ticks)
pg_us_per_msg "$before" "$after" "$MESSAGES"

echo "== PostgreSQL, two relay processes, one database" >&2
psql_admin "CREATE DATABASE bench_two"
mkdir -p "$WORK/data"
# Every client is this machine: the per-address shares tidings-bench gives a relay it starts.
cp bench/one-address.toml "$WORK/shares.toml"
start_relay() { # name -> RELAY_PID, RELAY_ADDRESS
    "$BIN/tidings-relay" --listen 127.0.0.1:0 --data-dir "$WORK/data" --store "$BASE/bench_two" \
        --config "$WORK/shares.toml" \
        >"$WORK/$1.out" 2>"$WORK/$1.log" &
    RELAY_PID=$!
    PIDS+=("$RELAY_PID")
    for _ in $(seq 300); do
        grep -q '^relay address: ' "$WORK/$1.out" 2>/dev/null && break
        sleep 0.1
    done
    RELAY_ADDRESS=$(sed -n 's/^relay address: //p' "$WORK/$1.out")
    [ -n "$RELAY_ADDRESS" ] || { cat "$WORK/$1.log" >&2; exit 1; }
}
start_relay a; addr_a=$RELAY_ADDRESS; pid_a=$RELAY_PID
start_relay b; addr_b=$RELAY_ADDRESS; pid_b=$RELAY_PID
settle; before=$(pg_ticks)
"$BIN/tidings-bench" "${COMMON[@]}" --senders 50 --recipients 50 --messages "$HALF" \
    --relay "$addr_a" --relay-pid "$pid_a" >"$WORK/two-a.json" &
bench_a=$!
"$BIN/tidings-bench" "${COMMON[@]}" --senders 50 --recipients 50 --messages "$HALF" \
    --relay "$addr_b" --relay-pid "$pid_b" >"$WORK/two-b.json"
wait "$bench_a"
kill "$pid_a" "$pid_b"; wait "$pid_a" "$pid_b" 2>/dev/null || true
settle; after=$(pg_ticks)
cat "$WORK/two-a.json" "$WORK/two-b.json"
pg_us_per_msg "$before" "$after" "$MESSAGES"
