#!/usr/bin/env bash
# The embedded store under the seed's load (performance issue, aim 3):
# SQLite, radius_logs on, 30,000 subscribers. First a storm (every
# subscriber logs in by MS-CHAPv2 and starts accounting at once: a BNG
# reboot), then DURATION seconds of churn: Interim-Updates every 30 s
# (1,000/s) plus CHURN sessions a second ending and starting again (a
# login, a Stop and a Start each). Prints every figure beside its target:
# no "database is locked", no batch spooled, accounting commit p99 < 50 ms
# (the writer's own histogram), auth p99 < 5 ms, the storm durable in < 2 s.
# shardius on CPUS_SERVER with one shard (background threads on the other
# CPU of that set when there is one), loadgen on CPU_LOADGEN.
#   bench/embedded-load.sh                  # DURATION=300 CHURN=500
#   DURATION=60 bench/embedded-load.sh      # a shorter run
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${DURATION:-300}
churn=${CHURN:-500}
cpus_server=${CPUS_SERVER:-0}
cpu_loadgen=${CPU_LOADGEN:-1}
. bench/lib.sh
embedded_server embedded-load 30000 "$cpus_server" SHARDIUS_LOG_RADIUS_LOGS=true
. bench/settle.sh
settle_disk
lg() { taskset -c "$cpu_loadgen" ./target/release/loadgen --auth-port "$auth" --acct-port "$acct" --quiet "$@"; }

echo "# bench/embedded-load.sh $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $(uname -r), $bin"
echo "# SQLite, radius_logs on, 1 shard; server CPUs $cpus_server, loadgen CPU $cpu_loadgen; $(grep -o 'shards on CPUs.*' "$work/serve.log" | head -n1); I/O pressure (some, last 10 s) at the start: $settled"
echo "## storm: 30,000 MS-CHAPv2 logins and Starts at once (1,024 in flight over 4 sockets)"
lg --scenario storm --auth mschapv2 --subscribers 30000 --inflight 1024 | tee "$work/storm.txt"
storm=$(awk '/authenticated and started after/ { print $(NF-1) }' "$work/storm.txt")
echo "## churn: ${duration} s, interims every 30 s (1,000/s) + $churn sessions/s ending and starting again"
# loadgen's churn begins by logging everyone in again (64 in flight): its
# auth p99 includes those 30,000 logins.
lg --scenario churn --auth mschapv2 --subscribers 30000 --interim 30 --churn-rate "$churn" \
    --duration "$duration" --inflight 64 | tee "$work/churn.txt"
sleep 2
auth_p99=$(awk '$1 == "access-request" { print $11 }' "$work/churn.txt")
# The writer's commit histogram: the first bucket holding 99% of batches.
commit_p99=$(curl -s "http://$http/metrics" | awk '
    /^shardius_accounting_commit_seconds_count/ { n = $2 }
    /^shardius_accounting_commit_seconds_bucket/ { match($0, /le="[^"]*"/); le = substr($0, RSTART + 4, RLENGTH - 5); b[++k] = le; c[k] = $2 }
    END { for (i = 1; i <= k; i++) if (c[i] >= 0.99 * n) { print (b[i] == "+Inf" ? "+Inf" : b[i] * 1000); exit } }')
locked=$(grep -c 'database is locked' "$work/serve.log" || true)
spooled=$(metric shardius_accounting_spooled_batches_total)
echo "## against the targets"
printf '%-44s %-14s %s\n' "figure" "measured" "target"
printf '%-44s %-14s %s\n' "storm: all 30,000 started (durable)" "${storm} s" "< 2 s"
printf '%-44s %-14s %s\n' "auth p99 during churn (loadgen)" "${auth_p99} ms" "< 5 ms"
printf '%-44s %-14s %s\n' "accounting commit p99 (writer histogram)" "<= ${commit_p99} ms" "< 50 ms"
printf '%-44s %-14s %s\n' "\"database is locked\" lines" "$locked" "0"
printf '%-44s %-14s %s\n' "batches spooled" "$spooled" "0"
printf '%-44s %-14s %s\n' "I/O pressure (some, last 10 s) at the end" "$(io_pressure)%" "(tasks waiting on the disk: its own writes included)"
printf '%-44s %-14s %s\n' "radius_logs rows written / dropped" "$(metric shardius_radius_log_written_total) / $(metric shardius_radius_log_dropped_total)" "(dropped on overflow, counted)"
