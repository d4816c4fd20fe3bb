#!/usr/bin/env bash
# Server-side address pools, shardius against FreeRADIUS 3.2 rlm_sqlippool,
# both on one throwaway PostgreSQL cluster on this machine (FreeRADIUS with
# Debian's stock ippool schema.sql and queries.conf, as a new user would
# set it up). Each server pinned to core 0, loadgen to core 1, rounds
# alternating. Per round and server: a storm of SUBSCRIBERS MS-CHAPv2
# logins on a pool with no address of theirs yet (each Start followed by
# its Stop), then the same storm again (every subscriber returning).
# Reports the time until every subscriber was answered, the accepts, the
# distinct Framed-IP-Addresses handed out, and the ratio. bench/compare.sh
# runs it at its end; alone:
#   bench/compare-pools.sh            # ROUNDS=3 SUBSCRIBERS=30000
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
subs=${SUBSCRIBERS:-30000}
need=()
command -v freeradius >/dev/null || need+=(freeradius)
[ -e /usr/lib/freeradius/rlm_sql_postgresql.so ] || need+=(freeradius-postgresql)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || { echo "install: sudo apt-get install ${need[*]}" >&2; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    systemctl stop freeradius 2>/dev/null || true
fi
cargo build --release -q -p shardius -p loadgen
work=$(mktemp -d /tmp/shardius-compare-pools.XXXXXX)
chmod 755 "$work"
pids=()
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
pgdata="$work/pg"
cleanup() {
    for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done
    runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdata" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
tcp_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# PostgreSQL: fsync and synchronous_commit on (the defaults), as in production.
pgport=$(tcp_port)
mkdir "$pgdata" && chown postgres "$pgdata"
runuser -u postgres -- "$pgbin/initdb" -D "$pgdata" -A trust -U postgres >/dev/null
runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdata" -l "$pgdata/pg.log" -w \
    -o "-p $pgport -k $pgdata -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
psql() { command psql -h 127.0.0.1 -p "$pgport" -U postgres -v ON_ERROR_STOP=1 -qAt "$@"; }

# FreeRADIUS: the users file (with Pool-Name), sql + sqlippool on PostgreSQL.
psql -c "CREATE DATABASE fr"
psql -d fr -f /etc/freeradius/3.0/mods-config/sql/ippool/postgresql/schema.sql >/dev/null
psql -d fr -c "INSERT INTO radippool (pool_name, framedipaddress, expiry_time)
    SELECT 'bench', '100.64.0.0'::inet + i, now() - interval '1 hour' FROM generate_series(2, 65534) i;
    ANALYZE radippool"
fr_auth=$(free_port); fr_acct=$(free_port)
cp -a /etc/freeradius/3.0 "$work/raddb"
rm -f "$work/raddb/sites-enabled/"* "$work/raddb/mods-enabled/eap"
cat > "$work/raddb/mods-enabled/sql" <<CONF
sql {
    dialect = "postgresql"
    driver = "rlm_sql_postgresql"
    server = "127.0.0.1"
    port = $pgport
    login = "postgres"
    password = ""
    radius_db = "fr"
    acct_table1 = "radacct"
    acct_table2 = "radacct"
    postauth_table = "radpostauth"
    authcheck_table = "radcheck"
    groupcheck_table = "radgroupcheck"
    authreply_table = "radreply"
    groupreply_table = "radgroupreply"
    usergroup_table = "radusergroup"
    read_groups = no
    read_clients = no
    client_table = "nas"
    group_attribute = "SQL-Group"
    pool {
        start = 5
        min = 4
        max = 32
        spare = 10
        uses = 0
        retry_delay = 30
        lifetime = 0
        idle_timeout = 60
    }
    \$INCLUDE \${modconfdir}/\${.:name}/main/\${dialect}/queries.conf
}
CONF
sed 's/dialect = "mysql"/dialect = "postgresql"/' /etc/freeradius/3.0/mods-available/sqlippool > "$work/raddb/mods-enabled/sqlippool"
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
        sqlippool
        ok
    }
    post-auth {
        sqlippool
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
        f.write(f'user{n} Cleartext-Password := "pass{n}", Pool-Name := "bench"\n'
                f'\tMikrotik-Rate-Limit = "2000k/10000k",\n\tAcct-Interim-Interval = 30\n\n')
PY
chmod -R a+rX "$work/raddb"
taskset -c 0 freeradius -f -d "$work/raddb" -l "$work/freeradius.log" &
pids+=($!)
for _ in $(seq 1 150); do grep -q "Ready to process requests" "$work/freeradius.log" 2>/dev/null && break; sleep 0.2; done
grep -q "Ready to process requests" "$work/freeradius.log" || { echo "FreeRADIUS did not start:"; tail -30 "$work/freeradius.log"; exit 1; }

# shardius: the same subscribers on a pool of the same /16, on the same cluster.
./target/release/shardius keygen --out "$work/key" >/dev/null
python3 -c "
print('username,password,service')
for n in range(1, $subs + 1): print(f'user{n},pass{n},bench')" > "$work/subs.csv"
: > "$work/empty.toml"
sh_start() { # round
    local url="postgres://postgres@127.0.0.1:$pgport/s$1"
    psql -c "CREATE DATABASE s$1"
    s() { ./target/release/shardius --config "$work/empty.toml" --database-url "$url" --key-file "$work/key" "$@"; }
    s migrate >/dev/null
    s nas add --name bench --ip 127.0.0.1 --secret testing123 --type mikrotik >/dev/null
    s pool add --name bench --range 100.64.0.0/16 >/dev/null
    s service add --name bench --download 10M --upload 2M --pool bench >/dev/null
    s subscriber import "$work/subs.csv" >/dev/null
    (cd "$work" && exec taskset -c 0 "$OLDPWD/target/release/shardius" --config "$work/empty.toml" --database-url "$url" \
        --key-file "$work/key" serve --shards 1 --listen-auth 127.0.0.1:0 --listen-acct 127.0.0.1:0 --listen-http 127.0.0.1:0 \
        2>"$work/shardius.log" >/dev/null) &
    sh_pid=$!
    until grep -q "listening auth=" "$work/shardius.log" 2>/dev/null; do sleep 0.1; done
    sh_auth=$(grep -o "auth=[0-9.:]*" "$work/shardius.log" | head -n1 | cut -d: -f2)
    sh_acct=$(grep -o "acct=[0-9.:]*" "$work/shardius.log" | head -n1 | cut -d: -f2)
}
storm() { # server label auth acct [args]
    local server=$1 label=$2 auth=$3 acct=$4; shift 4
    taskset -c 1 ./target/release/loadgen --quiet --allow-missing-message-authenticator --scenario storm --auth mschapv2 \
        --subscribers "$subs" --inflight 1024 --timeout-ms 3000 --retries 3 --auth-port "$auth" --acct-port "$acct" \
        --json "$work/$server.$label.$round.json" --addresses "$work/$server.$label.$round.tsv" "$@" >/dev/null || true
}

echo "# bench/compare-pools.sh $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $(uname -r): subscribers=$subs rounds=$rounds, PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}'), $(freeradius -v | head -n1)"
for round in $(seq 1 "$rounds"); do
    sh_start "$round"
    storm shardius new "$sh_auth" "$sh_acct" --stop-after-start
    sleep 2
    storm shardius returning "$sh_auth" "$sh_acct"
    kill "$sh_pid"; wait "$sh_pid" 2>/dev/null || true
    psql -d fr -c "UPDATE radippool SET expiry_time = now() - interval '1 hour', nasipaddress = '', pool_key = '',
        callingstationid = '', username = ''"
    storm freeradius new "$fr_auth" "$fr_acct" --stop-after-start
    sleep 2
    storm freeradius returning "$fr_auth" "$fr_acct"
done

python3 - "$work" "$rounds" <<'PY'
import json, statistics, sys, glob
work, rounds = sys.argv[1], int(sys.argv[2])
def rows(server, label):
    out = []
    for f in sorted(glob.glob(f"{work}/{server}.{label}.*.json")):
        r = json.load(open(f))
        a = next(k for k in r["kinds"] if k["kind"] == "access-request")
        lines = [l.split("\t") for l in open(f[:-5] + ".tsv").read().splitlines()]
        given = [l[3] for l in lines if l[2] == "accept" and l[3] != "-"]
        # Returning storm: subscribers given the address of their first login.
        first = f.replace(f".{label}.", ".new.")[:-5] + ".tsv"
        before = {l[1]: l[3] for l in (x.split("\t") for x in open(first).read().splitlines())}
        same = sum(1 for l in lines if l[2] == "accept" and l[3] != "-" and before.get(l[1]) == l[3])
        out.append({"answered s": r.get("all_authenticated_after_s") or float("nan"),
                    "invalid": sum(k["invalid"] for k in r["kinds"]),
                    "accepts": a["accepts"], "timeouts": a["timeouts"], "p99 ms": a["p99_us"] / 1000,
                    "addresses": len(given), "distinct": len(set(given)), "same as new": same})
    return out
print(f"{'storm':<10} {'metric':<11} {'shardius':>10} {'FreeRADIUS':>11} {'ratio':>7}   (medians of {rounds} rounds)")
for label in ["new", "returning"]:
    a, b = rows("shardius", label), rows("freeradius", label)
    for m in ["answered s", "p99 ms", "accepts", "timeouts", "invalid", "addresses", "distinct"] + (["same as new"] if label == "returning" else []):
        ma = statistics.median(x[m] for x in a)
        mb = statistics.median(x[m] for x in b)
        ratio = f"{ma / mb:7.2f}" if mb else "      -"
        print(f"{label:<10} {m:<11} {ma:10.3f} {mb:11.3f} {ratio}")
    for server, rs in [("shardius", a), ("freeradius", b)]:
        print(f"  {server} per round: " + ", ".join(f"{x['answered s']:.3f} s ({x['accepts']} accepted, {x['distinct']} distinct)" for x in rs))
PY
