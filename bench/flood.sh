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
. bench/lib.sh
embedded_server flood 1000 0
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
