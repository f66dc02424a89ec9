//! Pointing at the line a problem comes from: a key path in rendered YAML to its line, and a
//! line of rendered output to the template line that produced it.

use minijinja::{OutputSpan, OutputSpanKind};

/// The 1-based line and column of the deepest key of `path` found in block-style YAML.
/// Sequence indices in the path are skipped. Falls back to the deepest prefix found.
pub fn locate_path(text: &str, path: &[String]) -> Option<(usize, usize)> {
    let keys: Vec<&str> = path
        .iter()
        .map(String::as_str)
        .filter(|s| s.parse::<usize>().is_err())
        .collect();
    if keys.is_empty() {
        return None;
    }
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut best: Option<(usize, (usize, usize))> = None;
    for (index, raw) in text.lines().enumerate() {
        let content = raw.trim_start();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let mut indent = raw.len() - content.len();
        let mut content = content;
        while let Some(rest) = content.strip_prefix("- ") {
            indent += 2;
            content = rest.trim_start();
        }
        let Some(key) = mapping_key(content) else {
            continue;
        };
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        stack.push((indent, key));
        let depth = stack.len();
        if depth <= keys.len() && stack.iter().zip(&keys).all(|((_, k), want)| k == want) {
            let col = indent + 1;
            if best.is_none_or(|(d, _)| depth > d) {
                best = Some((depth, (index + 1, col)));
            }
            if depth == keys.len() {
                return Some((index + 1, col));
            }
        }
    }
    best.map(|(_, at)| at)
}

fn mapping_key(content: &str) -> Option<String> {
    if let Some(rest) = content.strip_prefix('"') {
        let end = rest.find('"')?;
        return rest[end + 1..]
            .trim_start()
            .starts_with(':')
            .then(|| rest[..end].to_owned());
    }
    if let Some(rest) = content.strip_prefix('\'') {
        let end = rest.find('\'')?;
        return rest[end + 1..]
            .trim_start()
            .starts_with(':')
            .then(|| rest[..end].to_owned());
    }
    let colon = content
        .find(": ")
        .or_else(|| content.strip_suffix(':').map(|s| s.len()))?;
    let key = content[..colon].trim_end();
    (!key.is_empty() && !key.starts_with('{') && !key.starts_with('[')).then(|| key.to_owned())
}

/// Byte offset where 1-based `line` starts in `text`.
pub fn line_offset(text: &str, line: usize) -> usize {
    if line <= 1 {
        return 0;
    }
    text.match_indices('\n')
        .nth(line - 2)
        .map(|(i, _)| i + 1)
        .unwrap_or(text.len())
}

/// The template and line that produced the output byte at `offset`.
pub fn template_line(output: &str, spans: &[OutputSpan], offset: usize) -> Option<(String, usize)> {
    // The first span that covers the offset or, for an empty line, the next one.
    let span = spans
        .iter()
        .find(|s| s.output_range().end > offset && !output[s.output_range()].trim().is_empty())?;
    let range = span.output_range();
    let line = match span.kind() {
        OutputSpanKind::Raw if offset >= range.start => {
            span.line() + output[range.start..offset].matches('\n').count()
        }
        _ => span.line(),
    };
    Some((span.name().to_owned(), line))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn finds_nested_keys_by_indentation() {
        let yaml = "receivers:\n  otlp:\n    protocols: {}\nexporters:\n  otlp:\n    endpoint: x\n";
        assert_eq!(
            locate_path(yaml, &p(&["exporters", "otlp", "endpoint"])),
            Some((6, 5))
        );
        assert_eq!(locate_path(yaml, &p(&["receivers", "otlp"])), Some((2, 3)));
        assert_eq!(
            locate_path(yaml, &p(&["exporters", "otlp", "missing"])),
            Some((5, 3))
        );
    }

    #[test]
    fn skips_sequence_indices() {
        let yaml = "service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n";
        assert_eq!(
            locate_path(
                yaml,
                &p(&["service", "pipelines", "traces", "receivers", "0"])
            ),
            Some((4, 7))
        );
    }

    #[test]
    fn line_offsets() {
        assert_eq!(line_offset("a\nb\nc", 1), 0);
        assert_eq!(line_offset("a\nb\nc", 3), 4);
    }
}
