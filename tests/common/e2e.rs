//! The config repo of the end-to-end tests (tests/fixtures/e2e), written into a directory with
//! the loopback ports of one run, and the edits the tests make to it.

use std::path::{Path, PathBuf};

/// The fixture: fleet.yaml with `@OTLP_PORT@` / `@SINK_PORT@` placeholders, one template, one
/// sample agent. Its golden file is written at run time (`check --update`): it holds the ports.
pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/e2e")
}

pub const TEMPLATE: &str = "templates/e2e.yaml.j2";

/// Copies the fixture into `dir` (which may exist), filling in the ports.
pub fn write_config_repo(dir: &Path, otlp_port: u16, sink_port: u16) {
    copy_dir(&fixture_dir(), dir);
    let fleet = dir.join("fleet.yaml");
    let text = std::fs::read_to_string(&fleet).expect("read fleet.yaml");
    let text = text
        .replace("@OTLP_PORT@", &otlp_port.to_string())
        .replace("@SINK_PORT@", &sink_port.to_string());
    assert!(
        !text.contains("_PORT@"),
        "every placeholder is filled: {text}"
    );
    std::fs::write(&fleet, text).expect("write fleet.yaml");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read fixture dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy fixture file");
        }
    }
}

/// Replaces the one occurrence of `from` in `dir/relative`.
pub fn edit(dir: &Path, relative: &str, from: &str, to: &str) {
    let path = dir.join(relative);
    let text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(
        text.matches(from).count(),
        1,
        "`{from}` must occur once in {relative}"
    );
    std::fs::write(&path, text.replacen(from, to, 1)).expect("write");
}

/// Sets the `revision` var that the resource processor stamps on every span.
pub fn set_revision(dir: &Path, from: &str, to: &str) {
    edit(
        dir,
        "fleet.yaml",
        &format!("revision: {from}\n"),
        &format!("revision: {to}\n"),
    );
}

/// Adds a `file` exporter to the traces pipeline of `template` (a copy of the fixture's): valid
/// for our schema and semantic checks, but a component the reference Collector distribution
/// does not have.
pub fn add_file_exporter(dir: &Path, template: &str, path: &Path) {
    edit(
        dir,
        template,
        "service:\n",
        &format!("  file:\n    path: {}\nservice:\n", path.display()),
    );
    edit(
        dir,
        template,
        "exporters: [otlphttp]",
        "exporters: [otlphttp, file]",
    );
}

/// Undoes any edit of the template (`add_file_exporter`, a broken line): the fixture's again.
pub fn restore_template(dir: &Path) {
    std::fs::copy(fixture_dir().join(TEMPLATE), dir.join(TEMPLATE)).expect("restore template");
}

/// Rewrites the golden files with `opamp-gitops check --update`; the repo must then pass.
pub fn update_goldens(dir: &Path) {
    let updated = super::run_cli(dir, &["check", "--update", "."]);
    assert_eq!(updated.code, 0, "check --update: {updated:?}");
    let checked = super::run_cli(dir, &["check", "."]);
    assert_eq!(checked.code, 0, "check after --update: {checked:?}");
}
