//! Attacker-chosen templates rendered for a sample agent, under the render memory bound: run
//! with `-rss_limit_mb=1024`, so a render that escapes the bound is a crash.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    opamp_gitops::fuzzing::template_render(data);
});
