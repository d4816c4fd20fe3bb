#!/usr/bin/env bash
# shardius against FreeRADIUS 3.2 on the same machine, same users, same
# reply attributes: each server pinned to core 0, loadgen to core 1,
# rounds alternating A B A B. Prints per scenario the medians side by side
# and the ratio shardius/FreeRADIUS; JSON and SVG plots go to results/.
# FreeRADIUS runs from a copy of its config in a temp dir (never /etc).
# At the end, bench/compare-pools.sh: server-side address pools against
# FreeRADIUS's rlm_sqlippool, both on PostgreSQL (POOLS=0 skips it), and
# bench/embedded-load.sh: the embedded store under the seed's load, each
# figure beside its target (EMBEDDED=0 skips it; EMBEDDED_DURATION=300),
# and bench/acct-pg.sh with and without quota (ACCT=0 skips it).
#   bench/compare.sh            # ROUNDS=3 SUBSCRIBERS=30000 by default
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
subs=${SUBSCRIBERS:-30000}
if ! command -v freeradius >/dev/null; then
    [ "$(id -u)" = 0 ] || { echo "install FreeRADIUS: sudo apt-get install freeradius" >&2; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq freeradius >/dev/null
    systemctl stop freeradius 2>/dev/null || true
fi
cargo build --release -q -p shardius -p loadgen
out="results/compare-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
work=$(mktemp -d /tmp/shardius-compare.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() { for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# FreeRADIUS: the stock modules, one virtual server, the users file.
fr_auth=$(free_port); fr_acct=$(free_port)
cp -a /etc/freeradius/3.0 "$work/raddb"
rm -f "$work/raddb/sites-enabled/"* "$work/raddb/mods-enabled/eap"
cat > "$work/raddb/sites-enabled/bench" <<CONF
server bench {
    listen {
        type = auth
        ipaddr = 127.0.0.1
        port = $fr_auth
        recv_buff = 4194304
    }
    listen {
        type = acct
        ipaddr = 127.0.0.1
        port = $fr_acct
        recv_buff = 4194304
    }
    authorize {
        preprocess
        chap
        mschap
        files
        pap
    }
    authenticate {
        Auth-Type PAP {
            pap
        }
        Auth-Type CHAP {
            chap
        }
        Auth-Type MS-CHAP {
            mschap
        }
    }
    preacct {
        preprocess
        acct_unique
    }
    accounting {
        ok
    }
}
CONF
cat > "$work/raddb/clients.conf" <<CONF
client bench {
    ipaddr = 127.0.0.1
    secret = testing123
}
CONF
python3 - "$work/raddb/mods-config/files/authorize" "$subs" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    for n in range(1, int(sys.argv[2]) + 1):
        f.write(f'user{n} Cleartext-Password := "pass{n}"\n'
                f'\tMikrotik-Rate-Limit = "2000k/10000k",\n\tFramed-Pool = "pppoe-pool",\n\tAcct-Interim-Interval = 30\n\n')
PY
chmod -R a+rX "$work/raddb"
taskset -c 0 freeradius -f -d "$work/raddb" -l "$work/freeradius.log" &
pids+=($!)

# shardius: the same users and reply, embedded store, one shard.
s() { ./target/release/shardius --config "$work/empty.toml" --database-url "sqlite:$work/s.db" --key-file "$work/key" "$@"; }
: > "$work/empty.toml"
s keygen --out "$work/key" >/dev/null
s nas add --name bench --ip 127.0.0.1 --secret testing123 >/dev/null
s service add --name bench --download 10M --upload 2M --pool pppoe-pool >/dev/null
python3 -c "
print('username,password,service')
for n in range(1, $subs + 1): print(f'user{n},pass{n},bench')" > "$work/subs.csv"
s subscriber import "$work/subs.csv" >/dev/null
sh_auth=$(free_port); sh_acct=$(free_port)
(cd "$work" && exec taskset -c 0 "$OLDPWD/target/release/shardius" --config "$work/empty.toml" --database-url "sqlite:$work/s.db" \
    --key-file "$work/key" serve --shards 1 --listen-auth "127.0.0.1:$sh_auth" --listen-acct "127.0.0.1:$sh_acct" --listen-http 127.0.0.1:0 \
    2>"$work/shardius.log" >/dev/null) &
pids+=($!)
for _ in $(seq 1 100); do
    grep -q "listening auth=" "$work/shardius.log" 2>/dev/null && grep -q "Ready to process requests" "$work/freeradius.log" 2>/dev/null && break
    sleep 0.2
done
grep -q "Ready to process requests" "$work/freeradius.log" || { echo "FreeRADIUS did not start:"; tail -20 "$work/freeradius.log"; exit 1; }

scenarios=(
    "max-pap|--scenario max --auth pap --requests 200000 --inflight 64"
    "max-mschapv2|--scenario max --auth mschapv2 --requests 100000 --inflight 64"
    "storm-mschapv2|--scenario storm --auth mschapv2 --subscribers $subs --inflight 1024"
)
run() { # name server auth acct args...
    local name=$1 server=$2 auth=$3 acct=$4; shift 4
    # FreeRADIUS 3.2.1 predates the BlastRADIUS fixes: no Message-Authenticator
    # in its replies. Both servers are held to the same (relaxed) check.
    taskset -c 1 ./target/release/loadgen --quiet --allow-missing-message-authenticator --auth-port "$auth" --acct-port "$acct" \
        --json "$out/$name.$server.$round.json" --plot "$out/$name.$server.$round.svg" "$@" >/dev/null || true
}
for round in $(seq 1 "$rounds"); do
    for sc in "${scenarios[@]}"; do
        name=${sc%%|*}; args=${sc#*|}
        # shellcheck disable=SC2086
        run "$name" shardius "$sh_auth" "$sh_acct" $args
        # shellcheck disable=SC2086
        run "$name" freeradius "$fr_auth" "$fr_acct" $args
    done
done
# Latency at a fixed load: half of FreeRADIUS's median PAP maximum from
# this run, against both servers and the do-nothing responder (the floor).
rate=$(python3 - "$out" <<'PY'
import glob, json, statistics, sys
runs = [json.load(open(f)) for f in glob.glob(f"{sys.argv[1]}/max-pap.freeradius.*.json")]
print(int(statistics.median(r["kinds"][0]["per_second"] for r in runs) / 2))
PY
)
floor_port=$(free_port)
taskset -c 0 ./target/release/loadgen --respond-on "$floor_port" 2>/dev/null &
pids+=($!)
sleep 0.3
for round in $(seq 1 "$rounds"); do
    for target in "shardius $sh_auth $sh_acct" "freeradius $fr_auth $fr_acct" "floor $floor_port $floor_port"; do
        # shellcheck disable=SC2086
        set -- $target
        run "fixed-rate-pap" "$1" "$2" "$3" --scenario max --auth pap --rate "$rate" --requests $((rate * 5)) --inflight 1024
    done
done
echo "fixed-rate scenario: $rate PAP logins/s (half of FreeRADIUS's median maximum)"

python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys, glob, os
out, rounds = sys.argv[1], int(sys.argv[2])
def load(name, server):
    rows = []
    for f in sorted(glob.glob(f"{out}/{name}.{server}.*.json")):
        r = json.load(open(f))
        k = {x["kind"]: x for x in r["kinds"]}
        a = k.get("access-request", {})
        rows.append({"auth/s": a.get("per_second", 0), "p99 ms": a.get("p99_us", 0) / 1000,
                     "invalid": sum(x["invalid"] for x in r["kinds"]), "timeouts": sum(x["timeouts"] for x in r["kinds"]),
                     "storm s": r.get("all_started_after_s") or 0})
    return rows
print(f"{'scenario':<16} {'metric':<9} {'shardius':>12} {'FreeRADIUS':>12} {'ratio':>7}   (medians of {rounds} rounds)")
for name in ["max-pap", "max-mschapv2", "storm-mschapv2", "fixed-rate-pap"]:
    a, b = load(name, "shardius"), load(name, "freeradius")
    metrics = ["auth/s", "p99 ms"] + (["storm s"] if name.startswith("storm") else [])
    for m in metrics + ["invalid", "timeouts"]:
        ma = statistics.median(x[m] for x in a) if a else float("nan")
        mb = statistics.median(x[m] for x in b) if b else float("nan")
        ratio = f"{ma / mb:7.2f}" if mb else "      -"
        print(f"{name:<16} {m:<9} {ma:12.1f} {mb:12.1f} {ratio}")
floor = load("fixed-rate-pap", "floor")
if floor:
    f99 = statistics.median(x["p99 ms"] for x in floor)
    s99 = statistics.median(x["p99 ms"] for x in load("fixed-rate-pap", "shardius"))
    print(f"{'fixed-rate-pap':<16} {'floor p99':<9} {f99:12.3f}   do-nothing responder; shardius p99 / floor = {s99 / f99:.2f}")
# The performance issue's aims, each figure beside its target.
def med(name, server, m):
    rows = load(name, server)
    return statistics.median(x[m] for x in rows) if rows else float("nan")
aims = [
    ("aim 1: PAP max, x FreeRADIUS", med("max-pap", "shardius", "auth/s") / med("max-pap", "freeradius", "auth/s"), ">= 5"),
    ("aim 1: MS-CHAPv2 max, x FreeRADIUS", med("max-mschapv2", "shardius", "auth/s") / med("max-mschapv2", "freeradius", "auth/s"), ">= 3.5"),
    ("aim 2: p99 at half FR max, x FreeRADIUS's", med("fixed-rate-pap", "shardius", "p99 ms") / med("fixed-rate-pap", "freeradius", "p99 ms"), "<= 1"),
]
if floor:
    aims.append(("aim 2: the same p99, x do-nothing responder", s99 / f99, "<= 1.5"))
print("\naims (aim 3: bench/embedded-load.sh below; aim 4: bench/acct-pg.sh)")
for what, value, target in aims:
    print(f"  {what:<44} {value:8.2f}   target {target}")
print(f"\nJSON and SVG per run: {out}/")
PY

# Server-side address pools against rlm_sqlippool (both on PostgreSQL).
if [ "${POOLS:-1}" = 1 ]; then
    echo
    ROUNDS=$rounds SUBSCRIBERS=$subs bench/compare-pools.sh
fi

if [ "${EMBEDDED:-1}" = 1 ]; then
    echo
    DURATION=${EMBEDDED_DURATION:-300} bench/embedded-load.sh
fi

# Aim 4 of the performance issue: accounting into PostgreSQL.
if [ "${ACCT:-1}" = 1 ]; then
    echo
    echo "aim 4: Interim-Updates into PostgreSQL, 256 in flight (target >= 20,000/s at p99 < 25 ms, with and without quota bookkeeping)"
    echo "  (each after bench/settle.sh's wait for the disk to go quiet: the previous scenario's writeback once cut it to a third)"
    for q in 0 1; do
        QUOTA=$q bench/acct-pg.sh 200000 256 2>&1 \
            | awk -v q="$q" '$1 == "acct-interim" { r = $3; p = $11 }
                /I\/O pressure/ { match($0, /before the run: [^;]*/); io = substr($0, RSTART + 16, RLENGTH - 16) }
                END { printf "  QUOTA=%s: %s/s, p99 %s ms (I/O pressure before it %s)\n", q, r, p, io }'
    done
fi
