#!/usr/bin/env bash
# Sustained accounting into PostgreSQL with acknowledgement after commit:
# a throwaway cluster (fsync and synchronous_commit on, as in production),
# shardius with 1 shard, and loadgen sending Interim-Updates for 30,000
# sessions with K in flight, every Accounting-Response verified.
# Usage: bench/acct-pg.sh [REQUESTS] [INFLIGHT]   (defaults 300000, 128)
#   SYNC=off bench/acct-pg.sh ...   the cluster with synchronous_commit=off
#   SHARDIUS=/path/to/other/shardius bench/acct-pg.sh ...   another build
#   RATE=20000 bench/acct-pg.sh 200000 2048   open loop: send at this rate (INFLIGHT
#                                   is then only the cap) and report the latency at it
#   QUOTA=1 bench/acct-pg.sh ...    the 30,000 users are subscribers of a service
#                                   with FUP tiers (thresholds never reached), so
#                                   every interim also goes through quota bookkeeping
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-300000}
inflight=${2:-128}
sync=${SYNC:-on}
quota=${QUOTA:-0}
rate=()
if [ -n "${RATE:-}" ]; then rate=(--rate "$RATE"); fi
cargo build --release -q -p shardius -p loadgen
shardius=${SHARDIUS:-$PWD/target/release/shardius}
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
work=$(mktemp -d /tmp/shardius-acct.XXXXXX)
as_pg=()
if [ "$(id -u)" = 0 ]; then chown postgres: "$work"; as_pg=(runuser -u postgres --); fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
server=""
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
    "${as_pg[@]}" "$bin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
"${as_pg[@]}" "$bin/initdb" -D "$work/data" -U postgres --auth=trust >/dev/null
"${as_pg[@]}" "$bin/pg_ctl" -D "$work/data" -o "-p $port -c listen_addresses=127.0.0.1 -c synchronous_commit=$sync -k $work" -l "$work/pg.log" -w start >/dev/null
"$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -qc "CREATE DATABASE radius"
url="postgres://postgres@127.0.0.1:$port/radius"
"$shardius" --database-url "$url" --key-file "$work/key" keygen --out "$work/key" >/dev/null
"$shardius" --database-url "$url" --key-file "$work/key" nas add --name bench --ip 127.0.0.1 --secret testing123 >/dev/null
if [ "$quota" = 1 ]; then
    s() { "$shardius" --database-url "$url" --key-file "$work/key" "$@" >/dev/null; }
    s service add --name bench --download 10M --upload 2M
    s service tier --service bench --period daily --level 1 --threshold 1T --download 5M --upload 1M
    s service tier --service bench --period monthly --level 1 --threshold 9T --download 2M --upload 1M
    "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d radius -qc \
        "INSERT INTO subscribers (username, password_enc, service_id)
         SELECT 'user' || g, '\\x00'::bytea, (SELECT id FROM services WHERE name = 'bench')
         FROM generate_series(1, 30000) g"
fi
. bench/settle.sh
settle_disk
(cd "$work" && exec taskset -c 0 "$shardius" --database-url "$url" --key-file "$work/key" \
    serve --shards 1 --listen-auth 127.0.0.1:0 --listen-acct 127.0.0.1:0 --listen-http 127.0.0.1:0 2>"$work/serve.log" >/dev/null) &
server=$!
until grep -q "listening auth=" "$work/serve.log"; do sleep 0.1; done
acct=$(grep -o "acct=[0-9.:]*" "$work/serve.log" | head -n1 | cut -d: -f2)
taskset -c 1 ./target/release/loadgen --scenario max-acct --acct-port "$acct" --subscribers 30000 --quiet \
    --requests "$requests" --inflight "$inflight" --timeout-ms 3000 "${rate[@]}"
http=$(grep -o "http=[0-9.:]*" "$work/serve.log" | head -n1 | cut -d= -f2)
echo "synchronous_commit=$sync quota=$quota; I/O pressure (some, last 10 s) before the run: $settled; from /metrics:"
curl -s "http://$http/metrics" | grep -E "^shardius_accounting_(commit_seconds_(sum|count)|batch_size_(sum|count)|backpressure_drops_total|events_written_total)"
kill "$server"; wait "$server" 2>/dev/null || true; server=""
grep "writer stopped" "$work/serve.log" | sed 's/^.*INFO //'
"$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d radius -tAc \
    "SELECT 'radacct rows: ' || count(*) || ', max session time ' || max(AcctSessionTime) FROM radacct"
"$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d radius -tAc \
    "SELECT 'subscriber_usage rows: ' || count(*) || ', bytes counted ' || coalesce(sum(daily_bytes), 0) FROM subscriber_usage"
