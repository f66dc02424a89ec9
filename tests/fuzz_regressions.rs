//! Every input under fuzz/regressions (seeds and anything the fuzzers found) runs through the
//! fuzz targets' code in every test run, so what was fixed stays fixed.

use std::path::Path;
use std::time::{Duration, Instant};

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut all: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    all.sort();
    assert!(!all.is_empty());
    all
}

#[test]
fn opamp_message_inputs_are_handled() {
    for (name, data) in inputs("opamp_message") {
        let started = Instant::now();
        opamp_gitops::fuzzing::opamp_message(&data);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{name} took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn repo_compile_inputs_fail_cleanly() {
    for (name, data) in inputs("repo_compile") {
        let started = Instant::now();
        let _ = opamp_gitops::fuzzing::repo_compile(&data);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{name} took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn template_render_inputs_end_with_a_config_or_a_diagnostic() {
    use opamp_gitops::repo::Desired;
    for (name, data) in inputs("template_render") {
        let desired = opamp_gitops::fuzzing::template_render(&data);
        match (name.as_str(), &desired) {
            ("valid", Desired::Config(_)) => {}
            ("valid", other) => panic!("the valid template renders: {other:?}"),
            (bomb, Desired::Invalid { diagnostics, .. }) if bomb.ends_with("-bomb") => {
                assert!(
                    diagnostics
                        .iter()
                        .any(|d| d.message.contains("MiB of memory")
                            || d.message.contains("did not finish")),
                    "{bomb}: {diagnostics:?}"
                );
            }
            (bomb, other) if bomb.ends_with("-bomb") => panic!("{bomb} was not stopped: {other:?}"),
            _ => {}
        }
    }
}
