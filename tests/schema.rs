//! The built-in collector schema against realistic configs: every fixture under
//! `tests/fixtures/schema/valid` passes, every one under `invalid` is refused.

use opamp_gitops::repo::validate::Validator;
use opamp_gitops::repo::Snapshot;
use std::path::Path;

fn fixtures(kind: &str) -> Vec<(String, serde_json::Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/schema")
        .join(kind);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixture dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read");
            let doc =
                serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), doc)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 8, "expected at least 8 {kind} fixtures");
    out
}

#[test]
fn valid_configs_pass_the_schema_and_semantic_checks() {
    let (validator, errors) = Validator::compile(&Snapshot::new(), None);
    assert!(errors.is_empty());
    for (name, doc) in fixtures("valid") {
        let problems = validator.validate(&doc);
        assert!(problems.is_empty(), "{name}: {problems:?}");
    }
}

#[test]
fn invalid_configs_are_refused() {
    let (validator, _) = Validator::compile(&Snapshot::new(), None);
    for (name, doc) in fixtures("invalid") {
        assert!(!validator.validate(&doc).is_empty(), "{name} passed");
    }
}
