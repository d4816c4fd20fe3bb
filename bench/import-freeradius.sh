#!/usr/bin/env bash
# `shardius import freeradius` at an ISP's size: a FreeRADIUS database made
# with Debian's stock PostgreSQL schema.sql holding SUBSCRIBERS users
# (Cleartext-Password, every tenth by NT-Password, each in one of 10 groups
# with Mikrotik-Rate-Limit, every other one with two radreply rows), read
# from a throwaway PostgreSQL cluster and imported into the embedded store
# and into a PostgreSQL database on the same cluster. Prints the time of
# the dry run, the import, and the re-import (which must change nothing).
#   bench/import-freeradius.sh            # SUBSCRIBERS=30000
set -euo pipefail
cd "$(dirname "$0")/.."
subs=${SUBSCRIBERS:-30000}
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { echo "needs the PostgreSQL server binaries (apt-get install postgresql)" >&2; exit 1; }
schema=/etc/freeradius/3.0/mods-config/sql/main/postgresql/schema.sql
[ -e "$schema" ] || { echo "needs FreeRADIUS's schema.sql (apt-get install freeradius)" >&2; exit 1; }
cargo build --release -q -p shardius
work=$(mktemp -d /tmp/shardius-import.XXXXXX)
chmod 755 "$work"
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
pgdata="$work/pg"
cleanup() {
    runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdata" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
pgport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir "$pgdata" && chown postgres "$pgdata"
runuser -u postgres -- "$pgbin/initdb" -D "$pgdata" -A trust -U postgres >/dev/null
runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdata" -l "$pgdata/pg.log" -w \
    -o "-p $pgport -k $pgdata -c listen_addresses=127.0.0.1" start >/dev/null
psql() { command psql -h 127.0.0.1 -p "$pgport" -U postgres -v ON_ERROR_STOP=1 -qAt "$@"; }
psql -c "CREATE DATABASE fr" -c "CREATE DATABASE target"
psql -d fr -f "$schema" >/dev/null
psql -d fr -c "
    INSERT INTO nas (nasname, shortname, type, secret)
        SELECT '10.0.' || (i / 250) || '.' || (i % 250 + 1), 'bng' || i, 'mikrotik', 'secret' || i
        FROM generate_series(1, 50) i;
    INSERT INTO radcheck (username, attribute, op, value)
        SELECT 'user' || i,
               CASE WHEN i % 10 = 0 THEN 'NT-Password' ELSE 'Cleartext-Password' END, ':=',
               CASE WHEN i % 10 = 0 THEN upper(md5(i::text)) ELSE 'pass' || i END
        FROM generate_series(1, $subs) i;
    INSERT INTO radcheck (username, attribute, op, value)
        SELECT 'user' || i, 'Simultaneous-Use', ':=', '1' FROM generate_series(1, $subs) i;
    INSERT INTO radusergroup (username, groupname, priority)
        SELECT 'user' || i, 'plan' || (i % 10), 1 FROM generate_series(1, $subs) i;
    INSERT INTO radgroupreply (groupname, attribute, op, value)
        SELECT 'plan' || g, 'Mikrotik-Rate-Limit', ':=', (g + 1) || 'M/' || (4 * (g + 1)) || 'M'
        FROM generate_series(0, 9) g;
    INSERT INTO radreply (username, attribute, op, value)
        SELECT 'user' || i, a, ':=', v
        FROM generate_series(2, $subs, 2) i,
             (VALUES ('Framed-IP-Address', '100.64.0.1'), ('Mikrotik-Address-List', 'paid')) t(a, v);
    ANALYZE"
./target/release/shardius keygen --out "$work/key" >/dev/null
printf '' > "$work/shardius.toml"
src="postgres://postgres@127.0.0.1:$pgport/fr"
run() { # label, database URL, args...
    local label=$1 url=$2; shift 2
    local t0 t1
    t0=$(date +%s.%N)
    ./target/release/shardius --config "$work/shardius.toml" --key-file "$work/key" \
        --database-url "$url" import freeradius --from-sql "$src" "$@" > "$work/out"
    t1=$(date +%s.%N)
    printf '%-34s %7s s   %s\n' "$label" "$(python3 -c "print(f'{$t1 - $t0:.2f}')")" "$(head -n1 "$work/out")"
}
echo "# bench/import-freeradius.sh $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $(uname -r): subscribers=$subs, PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}')"
run "dry run" "sqlite:$work/dry.db" --dry-run
run "import into SQLite" "sqlite:$work/s.db"
run "again into SQLite (no change)" "sqlite:$work/s.db"
run "import into PostgreSQL" "postgres://postgres@127.0.0.1:$pgport/target"
run "again into PostgreSQL" "postgres://postgres@127.0.0.1:$pgport/target"
n=$(psql -d target -c "SELECT count(*) FROM subscribers")
r=$(psql -d target -c "SELECT count(*) FROM radreply")
echo "PostgreSQL target: $n subscribers, $r radreply rows"
