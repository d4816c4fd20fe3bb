//! Any bytes as an accounting spool (torn, corrupted, crafted): the
//! reader never panics or loops and accounts for every byte.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shardius::fuzzing::spool_bytes(data);
});
