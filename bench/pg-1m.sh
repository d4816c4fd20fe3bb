#!/usr/bin/env bash
# Snapshot load at scale: a throwaway PostgreSQL cluster with 1,000,000
# subscribers; reports the full-load time, RSS per cached subscriber, and
# the time a 1,000-row delta refresh takes while the server keeps serving.
# Needs the PostgreSQL server binaries (apt-get install postgresql) and
# radclient (freeradius-utils). Run as root or as a user that may run initdb.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
work=$(mktemp -d /tmp/shardius-1m.XXXXXX)
as_pg=()
if [ "$(id -u)" = 0 ]; then chown postgres: "$work"; as_pg=(runuser -u postgres --); fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
    [ -n "${server:-}" ] && kill "$server" 2>/dev/null || true
    "${as_pg[@]}" "$bin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
"${as_pg[@]}" "$bin/initdb" -D "$work/data" -U postgres --auth=trust --no-sync >/dev/null
"${as_pg[@]}" "$bin/pg_ctl" -D "$work/data" -o "-p $port -c listen_addresses=127.0.0.1 -k $work" -l "$work/pg.log" -w start >/dev/null
psql() { "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d radius -v ON_ERROR_STOP=1 -qtA "$@"; }
"$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -qc "CREATE DATABASE radius"
url="postgres://postgres@127.0.0.1:$port/radius"
s() { ./target/release/shardius --database-url "$url" --key-file "$work/key" "$@"; }
s keygen --out "$work/key" >/dev/null
s nas add --name bench --ip 127.0.0.1 --secret testing123 >/dev/null
s service add --name bench --download 10M --upload 2M --pool bench-pool >/dev/null
s subscriber add --username seed --password pass --service bench >/dev/null
t0=$(date +%s.%N)
psql -f bench/pg_1m_subscribers.sql
echo "generated 1,000,000 subscribers in $(echo "$(date +%s.%N) - $t0" | bc) s"

./target/release/shardius --database-url "$url" --key-file "$work/key" \
    serve --shards 1 --listen-auth 127.0.0.1:0 --listen-acct 127.0.0.1:0 --listen-http 127.0.0.1:0 2>"$work/serve.log" >/dev/null &
server=$!
until grep -q "listening auth=" "$work/serve.log"; do sleep 0.1; done
grep -E "snapshot loaded" "$work/serve.log" | sed 's/^.*INFO //'
auth=$(grep -o "auth=[0-9.:]*" "$work/serve.log" | head -n1 | cut -d= -f2)
rss_kb=$(awk '/VmRSS/ {print $2}' /proc/$server/status)
echo "server RSS after load: $((rss_kb / 1024)) MiB, $((rss_kb * 1024 / 1000001)) bytes per subscriber (whole process)"
radclient -r 1 -t 2 "$auth" auth testing123 <<<'User-Name=user777777,User-Password=pass,Message-Authenticator=0x00' | grep -o "Received Access-[A-Za-z]*"
# user999 has id 1000: it is among the 1,000 rows changed, and not MAC-bound (odd numbers are not).
psql -c "UPDATE subscribers SET expiry_date = DATE '2028-01-31' WHERE id % 1000 = 0"
for _ in $(seq 1 100); do grep -q "subscriber snapshot refreshed" "$work/serve.log" && break; sleep 0.1; done
grep "subscriber snapshot refreshed" "$work/serve.log" | sed 's/^.*INFO //'
radclient -r 1 -t 2 "$auth" auth testing123 <<<'User-Name=user999,User-Password=pass,Message-Authenticator=0x00' | grep -o "Received Access-[A-Za-z]*"
