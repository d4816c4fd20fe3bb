//! An Accounting-Request as an event: never panics; its text is storable
//! and reads back as the request's bytes; it survives the spool's JSON.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shardius::fuzzing::accounting_event(data);
});
