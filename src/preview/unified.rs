//! Unified diffs of config files with secret-looking values redacted on both sides. The diff is
//! computed on the real text and each line redacted as it is written, so a changed `api_key`
//! shows as a changed line whose two sides both read `<redacted>`.

use crate::redact::redact_yaml;
use similar::{ChangeTag, TextDiff};

/// `--- a/NAME`, `+++ b/NAME` and the hunks of `before` → `after` with `context` lines around
/// each change; empty when the texts are equal.
pub fn unified_diff(name: &str, before: &str, after: &str, context: usize) -> String {
    if before == after {
        return String::new();
    }
    let diff = TextDiff::from_lines(before, after);
    let mut out = format!("--- a/{name}\n+++ b/{name}\n");
    for hunk in diff.unified_diff().context_radius(context).iter_hunks() {
        out.push_str(&format!("{}\n", hunk.header()));
        for change in hunk.iter_changes() {
            out.push(match change.tag() {
                ChangeTag::Delete => '-',
                ChangeTag::Insert => '+',
                ChangeTag::Equal => ' ',
            });
            out.push_str(&redact_yaml(change.value()));
            if change.missing_newline() {
                out.push_str("\n\\ No newline at end of file\n");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_secret_is_a_changed_line_redacted_on_both_sides() {
        let before = "exporters:\n  otlp:\n    headers:\n      api_key: first-secret\n";
        let after = "exporters:\n  otlp:\n    headers:\n      api_key: second-secret\n";
        let diff = unified_diff("collector.yaml", before, after, 3);
        assert!(diff.starts_with("--- a/collector.yaml\n+++ b/collector.yaml\n@@ "));
        assert!(diff.contains("\n-      api_key: <redacted>\n"), "{diff}");
        assert!(diff.contains("\n+      api_key: <redacted>\n"), "{diff}");
        assert!(!diff.contains("secret"), "{diff}");
    }

    #[test]
    fn context_lines_are_bounded_and_equal_texts_have_no_diff() {
        let before: String = (1..=20).map(|i| format!("k{i}: {i}\n")).collect();
        let after = before.replace("k10: 10", "k10: ten");
        let diff = unified_diff("f", &before, &after, 1);
        assert!(
            diff.contains(" k9: 9\n-k10: 10\n+k10: ten\n k11: 11\n"),
            "{diff}"
        );
        assert!(!diff.contains("k8"), "{diff}");
        assert_eq!(unified_diff("f", &before, &before, 3), "");
    }

    #[test]
    fn a_missing_final_newline_is_marked() {
        let diff = unified_diff("f", "a: 1", "a: 2\n", 3);
        assert!(
            diff.contains("-a: 1\n\\ No newline at end of file\n+a: 2\n"),
            "{diff}"
        );
    }
}
