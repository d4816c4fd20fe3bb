#!/usr/bin/env bash
# The spoofed unknown-NAS flood of the hardening issue: while one loadgen
# floods the auth port with Access-Requests from SOURCES distinct spoofed
# 127.x addresses (raw socket, as fast as one thread sends), a registered
# NAS logs in at RATE/s; reported: its p99, its losses, the flood's rate,
# what shardius counted and how many `unknown NAS` lines it wrote.
# shardius (one shard, SQLite, radius_logs on) on core 0, both loadgens on
# core 1. Needs root (raw socket). Prints a record for bench/runs/.
#   bench/flood.sh                          # SOURCES=100000 RATE=1000 SECONDS=10
#   SHARDIUS=/path/to/other/shardius bench/flood.sh   # the same against another build
set -euo pipefail
cd "$(dirname "$0")/.."
sources=${SOURCES:-100000}
rate=${RATE:-1000}
secs=${SECONDS_:-10}
cargo build --release -q -p shardius -p loadgen
bin=${SHARDIUS:-$PWD/target/release/shardius}
work=$(mktemp -d /tmp/shardius-flood.XXXXXX)
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
for n in range(1, 1001): print(f'user{n},pass{n},bench')" > "$work/subs.csv"
s subscriber import "$work/subs.csv" >/dev/null
(cd "$work" && exec taskset -c 0 "$bin" --database-url "sqlite:$work/db" --key-file "$work/key" \
    serve --shards 1 --listen-auth 127.0.0.1:0 --listen-acct 127.0.0.1:0 --listen-http 127.0.0.1:0 2>"$work/serve.log" >/dev/null) &
server=$!
until grep -q "listening auth=" "$work/serve.log"; do sleep 0.1; done
auth=$(grep -o "auth=[0-9.:]*" "$work/serve.log" | head -n1 | cut -d: -f2)
http=$(grep -o "http=[0-9.:]*" "$work/serve.log" | head -n1 | cut -d= -f2)
metric() { curl -s "http://$http/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
rcvbuf_errors() { awk '/^Udp:/ { if (h) { print $6; exit } h=1 }' /proc/net/snmp; }

echo "# bench/flood.sh $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $(uname -r), $bin"
echo "# sources=$sources legitimate rate=$rate/s for ${secs}s; shardius 1 shard on core 0, loadgens on core 1"
drops_before=$(rcvbuf_errors)
taskset -c 1 ./target/release/loadgen --spoof-flood "$sources" --server 127.0.0.1 --auth-port "$auth" \
    --duration $((secs + 2)) > "$work/flood.txt" &
flood=$!
sleep 1
taskset -c 1 ./target/release/loadgen --scenario max --auth pap --subscribers 1000 --auth-port "$auth" \
    --rate "$rate" --requests $((rate * secs)) --timeout-ms 1000 --retries 0 --quiet || true
wait "$flood"
cat "$work/flood.txt"
sleep 1
echo "kernel receive-buffer drops during the run: $(( $(rcvbuf_errors) - drops_before ))"
echo "shardius_unknown_nas_packets_total $(metric shardius_unknown_nas_packets_total)"
echo "shardius_unknown_nas_log_suppressed_total $(metric shardius_unknown_nas_log_suppressed_total)"
echo "unknown NAS log lines: $(grep -c 'unknown NAS: 127' "$work/serve.log" || true)"
echo "shard CPU (user+sys s): $(awk '{print ($14+$15)/100}' /proc/$server/stat)"
