//! The WebSocket/HTTP decode path and the session with the registry, on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    opamp_gitops::fuzzing::opamp_message(data);
});
