#!/usr/bin/env bash
# The embedded store under real load (hardening issue, item 8): one
# shard on SQLite with radius_logs on, loadgen sending PAP logins as fast
# as they are answered (64 in flight) and, at the same time, Interim-Updates
# at a fixed ACCT_RATE/s; reported: accounting latency and retransmissions
# (its p99 must not depend on radius_logs), batches spooled, radius_logs
# rows lost, "database is locked" lines. shardius on core 0, both loadgens
# on core 1. Prints a record for bench/runs/.
#   bench/sqlite-load.sh                        # ACCT_RATE=300 SECONDS_=15
#   SHARDIUS=/path/to/other/shardius bench/sqlite-load.sh
#   RADIUS_LOGS=false bench/sqlite-load.sh      # the same without radius_logs
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${ACCT_RATE:-300}
secs=${SECONDS_:-15}
. bench/lib.sh
embedded_server sqlite-load 30000 0 SHARDIUS_LOG_RADIUS_LOGS="${RADIUS_LOGS:-true}"

echo "# bench/sqlite-load.sh $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $(uname -r), $bin"
echo "# PAP max (64 in flight) + Interim-Updates at $rate/s for ${secs}s; SQLite, radius_logs=${RADIUS_LOGS:-true}, 1 shard on core 0, loadgens on core 1"
taskset -c 1 ./target/release/loadgen --scenario max --auth pap --subscribers 30000 --auth-port "$auth" \
    --acct-port "$acct" --inflight 64 --duration "$secs" --quiet > "$work/pap.txt" &
pap=$!
taskset -c 1 ./target/release/loadgen --scenario max-acct --subscribers 30000 --auth-port "$auth" \
    --acct-port "$acct" --rate "$rate" --requests $((rate * secs)) --quiet > "$work/acct.txt" || true
wait "$pap" || true
echo "## logins"; cat "$work/pap.txt"
echo "## accounting"; cat "$work/acct.txt"
sleep 2
echo "shardius_accounting_spooled_batches_total $(metric shardius_accounting_spooled_batches_total)"
echo "shardius_radius_log_written_total $(metric shardius_radius_log_written_total)"
echo "shardius_radius_log_failed_total $(metric shardius_radius_log_failed_total)"
echo "shardius_radius_log_dropped_total $(metric shardius_radius_log_dropped_total)"
echo "\"database is locked\" lines: $(grep -c 'database is locked' "$work/serve.log" || true)"
# The writer's own view (loadgen's latency includes its core, shared with
# the PAP loadgen): batches made durable within each bound, in seconds.
curl -s "http://$http/metrics" | awk '/^shardius_accounting_commit_seconds_(bucket|count|sum)/ { printf "%s ", $0 } END { print "" }' \
    | sed 's/shardius_accounting_commit_seconds_//g'
