#!/usr/bin/env bash
# Installs shardius for systemd: binary, unit, sysusers and sysctl drop-ins,
# example config and environment file (never overwriting existing ones).
#   sudo systemd/install.sh                  # builds, installs under /usr/local and /etc
#   DESTDIR=/tmp/pkg systemd/install.sh      # stage into a directory (packaging, tests)
#   BIN=target/release/shardius systemd/install.sh   # use an existing build
set -euo pipefail
cd "$(dirname "$0")/.."
destdir=${DESTDIR:-}
bin=${BIN:-}
if [ -z "$bin" ]; then
    cargo build --release --locked -p shardius
    bin=target/release/shardius
fi
install -Dm755 "$bin" "$destdir/usr/local/bin/shardius"
install -Dm644 systemd/shardius.service "$destdir/etc/systemd/system/shardius.service"
install -Dm644 systemd/shardius.sysusers "$destdir/usr/lib/sysusers.d/shardius.conf"
install -Dm644 systemd/60-shardius.conf "$destdir/etc/sysctl.d/60-shardius.conf"
install -Dm644 README.md "$destdir/usr/local/share/doc/shardius/README.md"
install -Dm644 tuning.md "$destdir/usr/local/share/doc/shardius/tuning.md"
install -dm755 "$destdir/etc/shardius"
for f in shardius.toml shardius.env; do
    if [ ! -e "$destdir/etc/shardius/$f" ]; then
        install -m640 "systemd/$f" "$destdir/etc/shardius/$f"
    fi
done
if [ -z "$destdir" ]; then
    systemd-sysusers /usr/lib/sysusers.d/shardius.conf
    chgrp shardius /etc/shardius/shardius.toml /etc/shardius/shardius.env
    sysctl -q --load /etc/sysctl.d/60-shardius.conf
    systemctl daemon-reload
    [ -e /etc/shardius/shardius.key ] || /usr/local/bin/shardius keygen --out /etc/shardius/shardius.key
    echo "installed; next: edit /etc/shardius/shardius.toml, 'shardius migrate', then 'systemctl enable --now shardius'"
fi
