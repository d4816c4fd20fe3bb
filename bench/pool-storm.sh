#!/usr/bin/env bash
# Issue 15's benchmark: a storm of SUBSCRIBERS MS-CHAPv2 logins (a BNG
# reboot), each followed by its accounting Start, against one node, in
# three kinds of round, alternating:
#   nopool    the service names no shardius pool (Framed-Pool, as before)
#   new       every subscriber on a pool with no address of its own yet:
#             each login waits for its claim (batched by the pools thread)
#   returning the same subscribers again after their Stops: every address
#             is held for its subscriber and answered from memory
# The server is pinned to core 0 (SHARDS shards), loadgen to core 1.
# BACKEND=sqlite (default) or BACKEND=postgres (a throwaway cluster on a
# free port, like the tests'). Prints a record for bench/runs/.
#   bench/pool-storm.sh            # SUBSCRIBERS=30000 ROUNDS=3 SHARDS=1
set -euo pipefail
cd "$(dirname "$0")/.."
subs=${SUBSCRIBERS:-30000}
rounds=${ROUNDS:-3}
shards=${SHARDS:-1}
inflight=${INFLIGHT:-4096}
backend=${BACKEND:-sqlite}
cargo build --release -q -p shardius -p loadgen
work=$(mktemp -d /tmp/shardius-poolstorm.XXXXXX)
chmod 755 "$work"
server=""
pgdata=""
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
    if [ -n "$pgdata" ]; then
        runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdata" -m immediate stop >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
if [ "$backend" = postgres ]; then
    pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
    pgport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    pgdata="$work/pg"
    mkdir "$pgdata" && chown postgres "$pgdata"
    runuser -u postgres -- "$pgbin/initdb" -D "$pgdata" -A trust -U postgres >/dev/null
    runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdata" -o "-p $pgport -k $pgdata -c listen_addresses=127.0.0.1" -l "$pgdata/pg.log" -w start >/dev/null
fi
db_url() { # round
    if [ "$backend" = postgres ]; then
        psql -h 127.0.0.1 -p "$pgport" -U postgres -qc "CREATE DATABASE r$1" >/dev/null
        echo "postgres://postgres@127.0.0.1:$pgport/r$1"
    else
        echo "sqlite:$work/r$1.db"
    fi
}
./target/release/shardius keygen --out "$work/key" >/dev/null
python3 -c "
print('username,password,service')
for n in range(1, $subs + 1): print(f'user{n},pass{n},bench')" > "$work/subs.csv"
provision() { # url pool?
    s() { ./target/release/shardius --database-url "$1" --key-file "$work/key" "${@:2}"; }
    s "$1" migrate >/dev/null
    s "$1" nas add --name bench --ip 127.0.0.1 --secret testing123 --type mikrotik >/dev/null
    if [ "$2" = pool ]; then
        s "$1" pool add --name bench --range 100.64.0.0/16 >/dev/null
        s "$1" service add --name bench --download 10M --upload 2M --pool bench >/dev/null
    else
        s "$1" service add --name bench --download 10M --upload 2M --pool router-pool >/dev/null
    fi
    s "$1" subscriber import "$work/subs.csv" >/dev/null
}
start() { # url
    (cd "$work" && SHARDIUS_LOG_LEVEL=${LOG_LEVEL:-info} exec taskset -c 0 "$OLDPWD/target/release/shardius" --database-url "$1" --key-file "$work/key" \
        serve --shards "$shards" --listen-auth 127.0.0.1:0 --listen-acct 127.0.0.1:0 --listen-http 127.0.0.1:0 2>"$work/serve.log" >/dev/null) &
    server=$!
    until grep -q "listening auth=" "$work/serve.log"; do sleep 0.1; done
    auth=$(grep -o "auth=[0-9.:]*" "$work/serve.log" | head -n1 | cut -d: -f2)
    acct=$(grep -o "acct=[0-9.:]*" "$work/serve.log" | head -n1 | cut -d: -f2)
}
stop() { kill "$server"; wait "$server" 2>/dev/null || true; server=""; }
storm() { # label [extra loadgen args]
    local label=$1; shift
    local out
    out=$(taskset -c 1 ./target/release/loadgen --scenario storm --auth mschapv2 --subscribers "$subs" \
        --inflight "$inflight" --auth-port "$auth" --acct-port "$acct" --timeout-ms 1000 --retries 3 --quiet \
        --json "$work/$label.json" "$@" 2>&1)
    python3 - "$work/$label.json" "$label" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
a = next(k for k in r["kinds"] if k["kind"] == "access-request")
print(f'{sys.argv[2]:10} authenticated_after_s={r["all_authenticated_after_s"]:.3f} started_after_s={r["all_started_after_s"]:.3f} '
      f'accepts={a["accepts"]} rejects={a["rejects"]} timeouts={a["timeouts"]} retransmits={a["retransmits"]} '
      f'p50_ms={a["p50_us"]/1000:.2f} p99_ms={a["p99_us"]/1000:.2f} max_ms={a["max_us"]/1000:.2f}')
PY
}

echo "# bench/pool-storm.sh $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $(uname -r), backend=$backend subscribers=$subs shards=$shards inflight=$inflight rounds=$rounds"
echo "# (every Access-Accept verified by loadgen; 'new' rounds each login a database claim, 'returning' from memory)"
for round in $(seq 1 "$rounds"); do
    url=$(db_url "n$round"); provision "$url" nopool; start "$url"
    storm nopool; stop
    url=$(db_url "p$round"); provision "$url" pool; start "$url"
    storm new --stop-after-start
    # the Stops are in the database and swept: every address held
    sleep 3
    storm returning
    if [ -n "${DEBUG:-}" ]; then grep -E "pools|WARN|ERROR" "$work/serve.log" | tail -40 || true; fi
    # every Start swept: one address in use per subscriber
    for _ in $(seq 1 100); do
        counts=$(./target/release/shardius --database-url "$url" --key-file "$work/key" pool list | awk '$1 == "bench" { print "in_use=" $4 " held=" $5 " offered=" $6 }')
        case "$counts" in "in_use=$subs "*) break ;; esac
        sleep 0.1
    done
    echo "pool after the returning storm: $counts"
    stop
done
