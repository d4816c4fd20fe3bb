#!/usr/bin/env bash
# Seeds the fuzz corpora (fuzz/corpus/<target>) from tests/vectors (RFC
# 2865 §7.1 and radclient captures) and from a few packets and spool files
# built here: an Accounting-Request with NUL and non-UTF-8 ids, spool
# records of format 1 and 2, a torn one. Files named rfc*/vec* are kept in
# git; what the fuzzer adds is not (see .gitignore).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p fuzz/corpus/{parse,engine,acct_event,coa_answer,spool}
for f in tests/vectors/*.hex; do
    name=$(basename "$f" .hex)
    tr -d ' \n' <"$f" | xxd -r -p >"fuzz/corpus/parse/$name"
done
python3 - <<'PY'
import glob, hashlib, json, os, struct, zlib

def attr(t, v):
    return bytes([t, len(v) + 2]) + v

def u32(t, n):
    return attr(t, struct.pack(">I", n))

def packet(code, ident, auth, attrs):
    body = b"".join(attrs)
    return bytes([code, ident]) + struct.pack(">H", 20 + len(body)) + auth + body

def signed_accounting(attrs, secret=b"fuzz-secret"):
    p = packet(4, 9, bytes(16), attrs)
    return p[:4] + hashlib.md5(p + secret).digest() + p[20:]

acct = [
    signed_accounting([u32(40, 1), attr(44, b"81a00003"), attr(1, b"alice"), attr(4, bytes([127, 0, 0, 1]))]),
    signed_accounting([u32(40, 3), attr(44, b"id\xff\x00"), attr(1, b"al\x00ice"), u32(42, 5), u32(52, 0xFFFFFFFF)]),
    signed_accounting([u32(40, 2), attr(44, b"s"), attr(1, b"x\\x41"), attr(33, b"proxy"), attr(4, bytes([10, 9, 9, 9]))]),
    signed_accounting([u32(40, 7), attr(4, bytes([127, 0, 0, 2]))]),
]
vectors = {}
for f in sorted(glob.glob("tests/vectors/*.hex")):
    vectors[os.path.basename(f)[:-4]] = bytes.fromhex("".join(open(f).read().split()))
for i, p in enumerate(acct):
    open(f"fuzz/corpus/acct_event/vec-acct-{i}", "wb").write(p)
    for control in (1, 5):
        open(f"fuzz/corpus/engine/vec-acct-{i}-{control}", "wb").write(bytes([control]) + p)
for name, p in vectors.items():
    for control in (0, 4):
        open(f"fuzz/corpus/engine/{name}-{control}", "wb").write(bytes([control]) + p)
# CoA answers: an ACK and a NAK with Error-Cause 503 (re-signed by the target).
open("fuzz/corpus/coa_answer/vec-ack", "wb").write(b"\x01" + packet(41, 7, bytes(16), []))
open("fuzz/corpus/coa_answer/vec-nak", "wb").write(b"\x01" + packet(42, 7, bytes(16), [u32(101, 503)]))

def event(sid, user):
    return {"kind": "Start", "unique_id": hashlib.md5(sid.encode()).hexdigest(), "session_id": sid,
            "username": user, "nas_ip": "127.0.0.1", "nas_port_id": None, "nas_port_type": None,
            "event_time": "2026-12-01T00:00:00Z", "start_time": "2026-12-01T00:00:00Z",
            "session_time": 0, "input_octets": 0, "output_octets": 0, "framed_ip": None,
            "calling_station_id": None, "called_station_id": None, "terminate_cause": None, "class": None}

def v2(events):
    payload = json.dumps(events).encode()
    header = b"\xf5SP2" + struct.pack("<II", len(payload), zlib.crc32(payload))
    return header + struct.pack("<I", zlib.crc32(header)) + payload

def v1(events):
    payload = json.dumps(events).encode()
    return struct.pack("<II", len(payload), zlib.crc32(payload)) + payload

good = v2([event("a", "alice"), event("b\\x00", "bob")]) + v2([event("c", "carol")])
open("fuzz/corpus/spool/vec-two-records", "wb").write(good)
open("fuzz/corpus/spool/vec-torn", "wb").write(good[:-7])
open("fuzz/corpus/spool/vec-legacy-then-v2", "wb").write(v1([event("old\u0000", "alice")]) + good)
damaged = bytearray(good)
damaged[30] ^= 0x10
open("fuzz/corpus/spool/vec-damaged-first", "wb").write(bytes(damaged))
PY
ls fuzz/corpus/*
