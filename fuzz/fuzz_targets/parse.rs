//! Any datagram: parsing never panics, and what parses round-trips.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shardius::fuzzing::parse_walk_round_trip(data);
});
