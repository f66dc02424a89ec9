//! The GitHub Actions steps of docs/ci.md run exactly as written on the example repository:
//! `check --format github` passes it, turns a broken pull request into an annotation on the
//! changed line, and with `--otelcol` (the reference Collector as `./otelcol`) passes it too.

mod common;

use common::deploy::root;
use common::CliResult;
use std::path::Path;
use std::process::Command;

/// The one-line `run:` of the step named `name` in docs/ci.md.
fn step(name: &str) -> String {
    let doc = std::fs::read_to_string(root().join("docs/ci.md")).expect("docs/ci.md");
    let mut lines = doc
        .lines()
        .skip_while(|l| l.trim() != format!("- name: {name}"));
    lines
        .next()
        .unwrap_or_else(|| panic!("docs/ci.md has a `{name}` step"));
    lines
        .take_while(|l| !l.trim_start().starts_with("- "))
        .find_map(|l| l.trim().strip_prefix("run: "))
        .unwrap_or_else(|| panic!("the `{name}` step has a one-line `run:`"))
        .to_owned()
}

/// A copy of example-config-repo, as a pull request's checkout has it.
fn checkout() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("cp")
        .arg("-r")
        .arg(root().join("example-config-repo/."))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    dir
}

/// `command` in bash, in `cwd`, with the built binary first on PATH (as an installed one is).
fn run_step(command: &str, cwd: &Path) -> CliResult {
    let bin = Path::new(env!("CARGO_BIN_EXE_opamp-gitops"))
        .parent()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("bash")
        .args(["-e", "-c", command])
        .env("PATH", path)
        .current_dir(cwd)
        .output()
        .expect("run the CI step");
    CliResult::from(output)
}

#[test]
fn the_check_step_passes_the_example_repo_and_annotates_a_broken_change() {
    let command = step("Check");
    assert_eq!(command, "opamp-gitops check . --format github");
    let repo = checkout();
    let clean = run_step(&command, repo.path());
    assert_eq!(clean.code, 0, "`{command}`: {clean:?}");
    assert!(!clean.stdout.contains("::error"), "{clean:?}");

    // A pull request that misspells a rule's key gets an annotation on that line.
    let fleet = repo.path().join("fleet.yaml");
    let text = std::fs::read_to_string(&fleet).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("    template: "))
        .expect("a rule's template in fleet.yaml")
        + 1;
    let edited: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i + 1 == line {
                l.replacen("template:", "tempalte:", 1)
            } else {
                l.to_owned()
            }
        })
        .collect();
    std::fs::write(&fleet, edited.join("\n") + "\n").unwrap();
    let broken = run_step(&command, repo.path());
    assert_eq!(broken.code, 1, "{broken:?}");
    let annotation = format!("::error file=fleet.yaml,line={line},col=5::unknown key `tempalte`");
    assert!(
        broken.stdout.contains(&annotation),
        "`{annotation}` in {broken:?}"
    );
}

#[test]
fn the_otelcol_check_step_passes_the_example_repo_with_the_reference_collector() {
    let command = step("Check with the Collector");
    assert_eq!(
        command,
        "opamp-gitops check . --format github --otelcol ./otelcol"
    );
    let repo = checkout();
    // What the step before it fetches (`docker cp`: a file in the checkout, not a link): here
    // the reference Collector (tests/reference).
    let collector = common::reference::collector();
    let fetched = repo.path().join("otelcol");
    std::fs::hard_link(&collector, &fetched)
        .or_else(|_| std::fs::copy(&collector, &fetched).map(|_| ()))
        .unwrap();
    let checked = run_step(&command, repo.path());
    assert_eq!(checked.code, 0, "`{command}`: {checked:?}");
    assert!(!checked.stdout.contains("::error"), "{checked:?}");
}
