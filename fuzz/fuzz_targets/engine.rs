//! The whole request path: the first byte picks the port, the source (a
//! registered NAS or a stranger) and whether the datagram is re-signed
//! with the NAS's secret; the rest goes through `Engine::handle` with a
//! real snapshot, twice (the second copy a retransmission).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some((control, datagram)) = data.split_first() {
        shardius::fuzzing::engine_handle(*control, datagram);
    }
});
