//! fleet.yaml and template compilation (and one render), on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = opamp_gitops::fuzzing::repo_compile(data);
});
