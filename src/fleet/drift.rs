//! Whether an agent's effective config still is its desired one. Collectors do not report the
//! bytes they were sent: the Supervisor merges the files, adds its own `opamp` extension and
//! telemetry settings and re-serialises the YAML, and the Collector redacts opaque values. So
//! the desired config is compared as data: it is *kept* when every key it sets is present in
//! the effective config with the same value, and every list it sets appears there in order
//! (extra entries, such as the Supervisor's extension, allowed).

use crate::repo::fleet::deep_merge;
use crate::repo::hash::{config_hash, ConfigHash};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{LazyLock, Mutex};

/// Verdicts already reached, by desired hash and the hash of the effective files: agents that
/// run the same config share one (parsing YAML is what a verdict costs). Cleared when full.
static VERDICTS: LazyLock<Mutex<Verdicts>> = LazyLock::new(Default::default);
/// By (desired hash, effective files hash).
type Verdicts = HashMap<(ConfigHash, ConfigHash), Option<bool>>;
const VERDICTS_KEPT: usize = 4096;

/// `drifted`, reached once per distinct pair of desired config and effective files.
pub fn drifted_memoized<E: AsRef<[u8]>>(
    desired_hash: ConfigHash,
    desired: &BTreeMap<String, impl AsRef<[u8]>>,
    effective: &BTreeMap<String, E>,
) -> Option<bool> {
    let key = (desired_hash, config_hash(effective));
    let verdicts = || VERDICTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(verdict) = verdicts().get(&key) {
        return *verdict;
    }
    let verdict = drifted(desired, effective);
    let mut kept = verdicts();
    if kept.len() >= VERDICTS_KEPT {
        kept.clear();
    }
    kept.insert(key, verdict);
    verdict
}

/// What collectors put in place of a value they do not report.
const REDACTED: &[&str] = &["[REDACTED]", "<redacted>"];

/// The verdict: None when it cannot be told (no effective config, or one that is not YAML,
/// such as the note that replaces an effective config over the size limit).
pub fn drifted<D: AsRef<[u8]>, E: AsRef<[u8]>>(
    desired: &BTreeMap<String, D>,
    effective: &BTreeMap<String, E>,
) -> Option<bool> {
    if effective.is_empty() {
        return None;
    }
    // The same file names: compared file by file.
    if desired.keys().eq(effective.keys()) {
        let mut any = false;
        for (name, body) in desired {
            let want = parse(body.as_ref())?;
            let have = parse(effective[name].as_ref())?;
            any |= !covers(&want, &have);
        }
        return Some(any);
    }
    let want = merged(desired.values().map(AsRef::as_ref))?;
    let have = merged(effective.values().map(AsRef::as_ref))?;
    Some(!covers(&want, &have))
}

fn parse(body: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(body).ok()?;
    match serde_saphyr::from_str::<Value>(text).ok()? {
        Value::Null => None,
        value => Some(value),
    }
}

fn merged<'a>(bodies: impl Iterator<Item = &'a [u8]>) -> Option<Value> {
    let mut all = Value::Object(Default::default());
    for body in bodies {
        deep_merge(&mut all, parse(body)?);
    }
    Some(all)
}

/// Whether `have` holds everything `want` sets.
fn covers(want: &Value, have: &Value) -> bool {
    match (want, have) {
        // `otlp:` with no settings means the defaults, however the collector writes them.
        (Value::Null, _) => true,
        (Value::Object(w), _) if w.is_empty() => true,
        (_, Value::String(s)) if REDACTED.contains(&s.as_str()) => true,
        (Value::Object(w), Value::Object(h)) => w
            .iter()
            .all(|(k, v)| h.get(k).is_some_and(|hv| covers(v, hv))),
        (Value::Array(w), Value::Array(h)) => {
            let mut rest = h.iter();
            w.iter().all(|wanted| rest.any(|had| covers(wanted, had)))
        }
        (Value::Array(_), _) | (Value::Object(_), _) => false,
        // Environment and file references are resolved by the collector.
        (Value::String(s), _) if s.contains("${") => true,
        (w, h) => match (scalar_text(w), scalar_text(h)) {
            (Some(w), Some(h)) => w.eq_ignore_ascii_case(&h),
            _ => false,
        },
    }
}

/// Scalars compare by their text, ignoring ASCII case: `8080` and `"8080"` are one value to a
/// collector, and it writes enumerations back in its own case (`level: none` as `None`).
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    const DESIRED: &str = "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 0.0.0.0:4317\nexporters:\n  debug: {}\nservice:\n  extensions: [health_check]\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n";

    #[test]
    fn the_supervisors_additions_and_reformatting_are_not_drift() {
        let effective = "exporters:\n  debug: null\nextensions:\n  opamp:\n    server: {ws: {endpoint: 'ws://x'}}\nreceivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: \"0.0.0.0:4317\"\nservice:\n  extensions: [health_check, opamp]\n  telemetry: {logs: {level: info}}\n  pipelines:\n    traces: {receivers: [otlp], exporters: [debug]}\n";
        assert_eq!(
            drifted(
                &files(&[("collector.yaml", DESIRED)]),
                &files(&[("", effective)])
            ),
            Some(false)
        );
    }

    #[test]
    fn shared_verdicts_are_kept_per_effective_config() {
        let desired = files(&[("collector.yaml", DESIRED)]);
        let hash = [7u8; 32];
        let kept = files(&[("collector.yaml", DESIRED)]);
        let changed = files(&[("collector.yaml", &DESIRED.replace("4317", "4318"))]);
        for _ in 0..2 {
            assert_eq!(drifted_memoized(hash, &desired, &kept), Some(false));
            assert_eq!(drifted_memoized(hash, &desired, &changed), Some(true));
        }
        let renamed = files(&[("other.yaml", &DESIRED.replace("4317", "4318"))]);
        assert_eq!(drifted_memoized(hash, &desired, &renamed), Some(true));
    }

    #[test]
    fn a_changed_value_a_missing_key_or_a_reordered_pipeline_is_drift() {
        let desired = files(&[("collector.yaml", DESIRED)]);
        for effective in [
            DESIRED.replace("4317", "4318"),
            DESIRED.replace("  debug: {}\n", "  otlphttp: {}\n"),
            DESIRED.replace("[health_check]", "[]"),
        ] {
            assert_eq!(
                drifted(&desired, &files(&[("collector.yaml", &effective)])),
                Some(true),
                "{effective}"
            );
        }
        let two = "a: {list: [x, y]}\n";
        assert_eq!(
            drifted(
                &files(&[("c", two)]),
                &files(&[("c", "a: {list: [y, x]}\n")])
            ),
            Some(true)
        );
    }

    #[test]
    fn redacted_values_and_references_match_what_they_hide() {
        let desired = files(&[("c", "exporters:\n  otlp:\n    headers:\n      authorization: ${env:TOKEN}\n    password: hunter2\n")]);
        let effective = files(&[("c", "exporters:\n  otlp:\n    headers: {authorization: '[REDACTED]'}\n    password: '[REDACTED]'\n")]);
        assert_eq!(drifted(&desired, &effective), Some(false));
    }

    #[test]
    fn enumerations_written_back_in_another_case_are_not_drift() {
        let desired = files(&[(
            "c",
            "service:\n  telemetry:\n    metrics:\n      level: none\n",
        )]);
        let effective = files(&[(
            "c",
            "service:\n  telemetry:\n    metrics:\n      level: None\n      readers: []\n",
        )]);
        assert_eq!(drifted(&desired, &effective), Some(false));
    }

    #[test]
    fn nothing_reported_or_not_yaml_cannot_be_told() {
        let desired = files(&[("c", DESIRED)]);
        assert_eq!(drifted(&desired, &BTreeMap::<String, Vec<u8>>::new()), None);
        assert_eq!(
            drifted(&desired, &files(&[("c", "# over the limit, not stored\n")])),
            None
        );
    }

    #[test]
    fn files_are_merged_when_their_names_differ() {
        let desired = files(&[
            ("a.yaml", "receivers: {otlp: {}}\n"),
            ("b.yaml", "exporters: {debug: {}}\n"),
        ]);
        let effective = files(&[("", "receivers: {otlp: null}\nexporters: {debug: null}\n")]);
        assert_eq!(drifted(&desired, &effective), Some(false));
        let partial = files(&[("", "receivers: {otlp: null}\n")]);
        assert_eq!(drifted(&desired, &partial), Some(true));
    }
}
