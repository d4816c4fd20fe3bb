#!/usr/bin/env bash
# Failover times of the high-availability issue, from the cluster tests
# themselves (tests/it/cluster.rs), run TRIES times (default 5) one after
# the other on a release build:
#   kill-9     kill -9 of the stale-sessions leader -> another node leads
#   SIGSTOP    a frozen leader (TCP open) -> another node leads
#   cut        the leader's database traffic held by a relay (a cut
#              network: no answer, connections open) -> another node leads
#   promotion  primary crashed, standby promoted -> every job led again
#              (and the nodes' spools replayed into the new primary)
#   ack        accounting acknowledgement latency across the database
#              failover, as the test's NAS sees it (next server after a
#              500 ms timeout): p50, p99, max of each try
# Prints a record for bench/runs/: each try's numbers, then median and max.
set -euo pipefail
cd "$(dirname "$0")/.."
tries="${TRIES:-5}"
echo "# bench/ha-failover.sh $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $(uname -r), $tries tries, commit $(git rev-parse --short HEAD)"
cargo test --release -q --test it --no-run 2>/dev/null
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
for t in $(seq 1 "$tries"); do
    cargo test --release -q --test it -- cluster:: --nocapture --test-threads=1 >"$out" 2>&1 || {
        echo "try $t failed:"; tail -40 "$out"; exit 1; }
    # (not anchored at the line's start: libtest's -q progress dots
    # precede a test's first line of output)
    k9=$(sed -n 's/.*failover kill-9: \([0-9]*\) ms$/\1/p' "$out")
    st=$(sed -n 's/.*failover SIGSTOP: \([0-9]*\) ms$/\1/p' "$out")
    nc=$(sed -n 's/.*failover network cut: \([0-9]*\) ms$/\1/p' "$out")
    pr=$(sed -n 's/.*database failover: jobs led again \([0-9]*\) ms after the promotion.*/\1/p' "$out")
    sp=$(sed -n 's/.*spools replayed \([0-9]*\) ms after the promotion$/\1/p' "$out")
    ack=$(sed -n 's/.*accounting acknowledgement across the failover: //p' "$out")
    for v in "$k9" "$st" "$nc" "$pr" "$sp"; do
        [ -n "$v" ] || { echo "try $t: a figure is missing from the test output:"; cat "$out"; exit 1; }
    done
    echo "try $t: kill-9 ${k9} ms, SIGSTOP ${st} ms, network cut ${nc} ms, promotion ${pr} ms (spools replayed ${sp} ms), ack ${ack}"
    echo "$k9 $st $pr $sp $nc" >>"$out.sum"
done
stats() { # column name
    sort -n | awk -v name="$1" '{ v[NR] = $1 } END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%-28s median %6.0f ms   max %6.0f ms   (n=%d)\n", name, m, v[NR], NR }'
}
awk '{print $1}' "$out.sum" | stats "kill-9 -> new leader"
awk '{print $2}' "$out.sum" | stats "SIGSTOP -> new leader"
awk '{print $5}' "$out.sum" | stats "network cut -> new leader"
awk '{print $3}' "$out.sum" | stats "promotion -> jobs led"
awk '{print $4}' "$out.sum" | stats "promotion -> spools replayed"
rm -f "$out.sum"
