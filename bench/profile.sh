#!/usr/bin/env bash
# Profiles a release relay under the benchmark load with `perf` (software cpu-clock samples,
# DWARF call graphs) and prints where its CPU time goes, bucketed by
# bench/perf-categories.awk (Noise, signatures, re-encryption, storage, QUIC, ...).
#
#   bench/profile.sh [tidings-bench arguments...]   (BENCH_BIN=DIR: the binaries in DIR, no build)
#
# Default load: the default 100 -> 100, 1 KiB payload, 6,000 messages, no idle-client or
# connection-rate phase (so the profile is the message load). Needs `perf` (Debian:
# linux-perf); everything stays on 127.0.0.1 and stops on exit.
set -euo pipefail
# Errors from the bench are one line, not a backtrace.
export RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { echo "perf not found (apt-get install linux-perf)" >&2; exit 1; }
ARGS=("$@")
[ ${#ARGS[@]} -gt 0 ] || ARGS=(--messages 6000 --idle-clients 0 --connect-rate 0)

if [ -n "${BENCH_BIN:-}" ]; then
    # BENCH_BIN=DIR: binaries built elsewhere (e.g. the commit before a change), no build.
    BIN=$BENCH_BIN
else
    cargo build --release -q -p tidings-bench -p tidings-relay >&2
    BIN=target/release
fi
WORK=$(mktemp -d -t tidings-profile-XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Every client comes from 127.0.0.1: the same one-address shares as bench/compare.sh.
cp bench/one-address.toml "$WORK/shares.toml"
"$BIN/tidings-relay" --listen 127.0.0.1:0 --data-dir "$WORK/data" --config "$WORK/shares.toml" \
    >"$WORK/stdout" 2>"$WORK/relay.log" &
RELAY_PID=$!
PIDS+=("$RELAY_PID")
ADDRESS=""
for _ in $(seq 1 300); do
    ADDRESS=$(sed -n 's/^relay address: //p' "$WORK/stdout" | head -n 1)
    [ -n "$ADDRESS" ] && break
    sleep 0.1
done
[ -n "$ADDRESS" ] || { echo "the relay printed no address" >&2; exit 1; }

perf record -q -e cpu-clock -F 200 --call-graph dwarf,16384 -p "$RELAY_PID" -o "$WORK/perf.data" \
    2>"$WORK/perf.log" &
PERF_PID=$!
PIDS+=("$PERF_PID")
sleep 0.5
"$BIN/tidings-bench" --relay "$ADDRESS" --relay-pid "$RELAY_PID" --relay-data-dir "$WORK/data" "${ARGS[@]}"
kill -INT "$PERF_PID"
wait "$PERF_PID" 2>/dev/null || true
echo "relay CPU by part of the work (share of on-CPU samples):"
perf script -i "$WORK/perf.data" -F comm,tid,ip,sym 2>/dev/null >"$WORK/perf.txt"
awk -f bench/perf-categories.awk "$WORK/perf.txt"
# PROFILE_KEEP=FILE keeps the symbolized samples for a closer look.
[ -z "${PROFILE_KEEP:-}" ] || cp "$WORK/perf.txt" "$PROFILE_KEEP"
