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
cargo build --release -q -p shardius -p loadgen
bin=${SHARDIUS:-$PWD/target/release/shardius}
work=$(mktemp -d /tmp/shardius-sqlite-load.XXXXXX)
server=""
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
s() { "$bin" --database-url "sqlite:$work/db" --key-file "$work/key" "$@"; }
s keygen --out "$work/key" >/dev/null
s nas add --name bench --ip 127.0.0.1 --secret testing123 --type mikrotik >/dev/null
s service add --name bench --download 10M --upload 2M >/dev/null
python3 -c "
print('username,password,service')
for n in range(1, 30001): print(f'user{n},pass{n},bench')" > "$work/subs.csv"
s subscriber import "$work/subs.csv" >/dev/null
(cd "$work" && SHARDIUS_LOG_RADIUS_LOGS=${RADIUS_LOGS:-true} exec taskset -c 0 "$bin" --database-url "sqlite:$work/db" --key-file "$work/key" \
    serve --shards 1 --listen-auth 127.0.0.1:0 --listen-acct 127.0.0.1:0 --listen-http 127.0.0.1:0 2>"$work/serve.log" >/dev/null) &
server=$!
until grep -q "listening auth=" "$work/serve.log"; do sleep 0.1; done
auth=$(grep -o "auth=[0-9.:]*" "$work/serve.log" | head -n1 | cut -d: -f2)
acct=$(grep -o "acct=[0-9.:]*" "$work/serve.log" | head -n1 | cut -d: -f2)
http=$(grep -o "http=[0-9.:]*" "$work/serve.log" | head -n1 | cut -d= -f2)
metric() { curl -s "http://$http/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }

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
