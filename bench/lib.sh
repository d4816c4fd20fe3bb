# Shared by the bench scripts that run one shardius on the embedded store:
#   . bench/lib.sh
#   embedded_server NAME SUBSCRIBERS CPUS [ENV=VALUE ...]
# builds the release binaries, makes a temp dir with a key, the NAS
# 127.0.0.1 (testing123, mikrotik), the service `bench` and SUBSCRIBERS
# subscribers userN/passN, starts `shardius serve --shards 1` under
# `taskset -c CPUS` with the given environment, and sets: bin, work,
# server (its pid), auth, acct, http (ports / address) and metric NAME.
# The temp dir and the server go away on exit.
cargo build --release -q -p shardius -p loadgen
bin=${SHARDIUS:-$PWD/target/release/shardius}
server=""
work=""
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
    [ -n "$work" ] && rm -rf "$work"
}
trap cleanup EXIT
s() { "$bin" --database-url "sqlite:$work/db" --key-file "$work/key" "$@"; }
metric() { curl -s "http://$http/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }

embedded_server() {
    local name=$1 subscribers=$2 cpus=$3
    shift 3
    work=$(mktemp -d "/tmp/shardius-$name.XXXXXX")
    s keygen --out "$work/key" >/dev/null
    s nas add --name bench --ip 127.0.0.1 --secret testing123 --type mikrotik >/dev/null
    s service add --name bench --download 10M --upload 2M >/dev/null
    python3 -c "
print('username,password,service')
for n in range(1, $subscribers + 1): print(f'user{n},pass{n},bench')" > "$work/subs.csv"
    s subscriber import "$work/subs.csv" >/dev/null
    (cd "$work" && exec env "$@" taskset -c "$cpus" "$bin" --database-url "sqlite:$work/db" --key-file "$work/key" \
        serve --shards 1 --listen-auth 127.0.0.1:0 --listen-acct 127.0.0.1:0 --listen-http 127.0.0.1:0 \
        2>"$work/serve.log" >/dev/null) &
    server=$!
    until grep -q "listening auth=" "$work/serve.log"; do sleep 0.1; done
    auth=$(grep -o "auth=[0-9.:]*" "$work/serve.log" | head -n1 | cut -d: -f2)
    acct=$(grep -o "acct=[0-9.:]*" "$work/serve.log" | head -n1 | cut -d: -f2)
    http=$(grep -o "http=[0-9.:]*" "$work/serve.log" | head -n1 | cut -d= -f2)
}
