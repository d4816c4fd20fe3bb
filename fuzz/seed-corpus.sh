#!/usr/bin/env bash
# Seeds fuzz/corpus/parse with the packets in tests/vectors (RFC 2865 §7.1
# and radclient captures), as binary files named after their vector.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p fuzz/corpus/parse
for f in tests/vectors/*.hex; do
    name=$(basename "$f" .hex)
    tr -d ' \n' <"$f" | xxd -r -p >"fuzz/corpus/parse/$name"
done
ls fuzz/corpus/parse
