//! A NAS's answer to our Disconnect-Request; with the first byte odd it is
//! re-signed as a response to it, so the code and Error-Cause paths run.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some((control, answer)) = data.split_first() {
        shardius::fuzzing::coa_answer(control & 1 == 1, answer);
    }
});
