#!/usr/bin/env bash
# The CoA sweep of the architecture issue: 10,000 open sessions on 20
# NASes (fake NASes on 127.0.0.10-29, 5 of them silent), every subscriber
# disabled in one UPDATE; reported: when the first Disconnect-Request left
# and when all 10,000 were settled (ACK or timeout after coa.tries 3 x
# timeout_ms 2000). Prints a record for bench/runs/.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "# bench/coa-sweep.sh $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $(uname -r)"
cargo test --release -q --test it -- --ignored --exact \
    coa::sweep_of_10000_sessions_on_20_nases_5_silent --nocapture 2>&1 | grep -E "^sweep|test result"
