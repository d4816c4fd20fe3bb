#!/usr/bin/env bash
# The runs behind tuning.md's socket-buffer, shard and memlock advice:
# a 30,000-subscriber MS-CHAPv2 login storm (a BNG reboot) against one
# shard with net.core.rmem_max at the stock 212,992 bytes and at 16 MiB,
# counting what the kernel dropped (Udp RcvbufErrors, softnet backlog) and
# what shardius's /metrics says; then net.core.netdev_max_backlog at 100,
# the stock 1000 and 16384; then memory per shard count.
# Needs root for sysctl; restores the old values. Prints a record for
# bench/runs/.
#   bench/tuning-runs.sh            # SUBSCRIBERS=30000 INFLIGHT=4096
set -euo pipefail
cd "$(dirname "$0")/.."
subs=${SUBSCRIBERS:-30000}
inflight=${INFLIGHT:-4096}
cargo build --release -q -p shardius -p loadgen
work=$(mktemp -d /tmp/shardius-tuning.XXXXXX)
old_max=$(sysctl -n net.core.rmem_max)
old_default=$(sysctl -n net.core.rmem_default)
old_backlog=$(sysctl -n net.core.netdev_max_backlog)
server=""
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
    sysctl -qw net.core.rmem_max="$old_max" net.core.rmem_default="$old_default" net.core.netdev_max_backlog="$old_backlog"
    rm -rf "$work"
}
trap cleanup EXIT
s() { ./target/release/shardius --database-url "sqlite:$work/db" --key-file "$work/key" "$@"; }
s keygen --out "$work/key" >/dev/null
s nas add --name bench --ip 127.0.0.1 --secret testing123 --type mikrotik >/dev/null
s service add --name bench --download 10M --upload 2M >/dev/null
python3 -c "
print('username,password,service')
for n in range(1, $subs + 1): print(f'user{n},pass{n},bench')" > "$work/subs.csv"
s subscriber import "$work/subs.csv" >/dev/null

start() { # shards
    (cd "$work" && exec taskset -c 0 "$OLDPWD/target/release/shardius" --database-url "sqlite:$work/db" --key-file "$work/key" \
        serve --shards "$1" --listen-auth 127.0.0.1:0 --listen-acct 127.0.0.1:0 --listen-http 127.0.0.1:0 2>"$work/serve.log" >/dev/null) &
    server=$!
    until grep -q "listening auth=" "$work/serve.log"; do sleep 0.1; done
    auth=$(grep -o "auth=[0-9.:]*" "$work/serve.log" | head -n1 | cut -d: -f2)
    acct=$(grep -o "acct=[0-9.:]*" "$work/serve.log" | head -n1 | cut -d: -f2)
    http=$(grep -o "http=[0-9.:]*" "$work/serve.log" | head -n1 | cut -d= -f2)
}
stop() { kill "$server"; wait "$server" 2>/dev/null || true; server=""; }
softnet_drops() { local s=0 _a d _r; while read -r _a d _r; do s=$((s + 16#$d)); done < /proc/net/softnet_stat; echo "$s"; }
rcvbuf_errors() { awk '/^Udp:/ { if (h) { print $6; exit } h=1 }' /proc/net/snmp; }
metric() { curl -s "http://$http/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }

echo "# bench/tuning-runs.sh $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $(uname -r), subscribers=$subs inflight=$inflight"
for run in "212992 1000" "16777216 1000" "16777216 100" "16777216 16384"; do
    set -- $run
    rmem=$1 backlog=$2
    [ -n "${ONLY_BACKLOG:-}" ] && [ "$rmem" = 212992 ] && continue
    sysctl -qw net.core.rmem_max=$rmem net.core.rmem_default=$rmem net.core.netdev_max_backlog=$backlog
    start 1
    before=$(rcvbuf_errors)
    softnet_before=$(softnet_drops)
    echo "## storm, 1 shard, rmem_max=rmem_default=$rmem netdev_max_backlog=$backlog"
    taskset -c 1 ./target/release/loadgen --scenario storm --auth mschapv2 --subscribers "$subs" \
        --inflight "$inflight" --auth-port "$auth" --acct-port "$acct" --timeout-ms 1000 --retries 3 2>&1 | grep -v "^$" || true
    sleep 0.5
    echo "kernel Udp RcvbufErrors during the run: $(( $(rcvbuf_errors) - before ))"
    echo "kernel softnet backlog drops during the run: $(( $(softnet_drops) - softnet_before ))"
    echo "shardius_access_accepts_total $(metric shardius_access_accepts_total)"
    echo "shardius_duplicates_total $(metric shardius_duplicates_total)"
    echo "shardius_accounting_backpressure_drops_total $(metric shardius_accounting_backpressure_drops_total)"
    stop
done
sysctl -qw net.core.rmem_max="$old_max" net.core.rmem_default="$old_default" net.core.netdev_max_backlog="$old_backlog"
for shards in 1 2; do
    start "$shards"
    sleep 1
    echo "## memory with $shards shard(s), $subs subscribers: $(grep -E 'VmRSS|VmLck' /proc/$server/status | tr -s ' \t' ' ' | paste -sd ' ')"
    echo "RLIMIT_MEMLOCK of the server: $(awk '/Max locked memory/ { print $4, $5 }' /proc/$server/limits)"
    stop
done
