//! Reading the repository's own YAML files (fleet.yaml, agents/*.yaml) into their types, and
//! parse errors in this project's words: every unknown key of a file at its line, a duplicate
//! key by name, and no wording or option names of the parser.

use super::locate::locate_path;
use crate::diagnostics::Diagnostic;
use serde::de::DeserializeOwned;
use serde_saphyr::{MessageFormatter, UserMessageFormatter};

/// Parses `source` (the text of `file`) into `T`. Keys `T` does not know are all reported, each
/// at its line, instead of stopping at the first; a parse error comes after them.
pub fn parse<T: DeserializeOwned>(file: &str, source: &str) -> Result<T, Vec<Diagnostic>> {
    let mut unknown: Vec<Vec<String>> = Vec::new();
    let parsed = serde_saphyr::with_deserializer_from_str(source, |de| {
        serde_ignored::deserialize(de, |path| unknown.push(segments(&path)))
    });
    let mut diagnostics: Vec<Diagnostic> = without_span_wrappers(unknown)
        .iter()
        .map(|path| unknown_key(file, source, path))
        .collect();
    match parsed {
        Ok(value) if diagnostics.is_empty() => Ok(value),
        Ok(_) => Err(diagnostics),
        Err(e) => {
            diagnostics.push(yaml_error(file, &e));
            Err(diagnostics)
        }
    }
}

/// serde-saphyr reads a `Spanned<T>` as a map of a private marker key and `value`: neither is
/// a key of the file. Drops the markers and the `value` segment below each wrapper.
fn without_span_wrappers(paths: Vec<Vec<String>>) -> Vec<Vec<String>> {
    const MARKER: &str = "__serde_saphyr_private_spanned";
    let wrappers: Vec<Vec<String>> = paths
        .iter()
        .filter(|p| p.last().is_some_and(|k| k == MARKER))
        .map(|p| p[..p.len() - 1].to_vec())
        .collect();
    paths
        .into_iter()
        .filter(|p| p.last().is_none_or(|k| k != MARKER))
        .map(|p| {
            p.iter()
                .enumerate()
                .filter(|(i, segment)| {
                    !(*segment == "value" && wrappers.contains(&p[..*i].to_vec()))
                })
                .map(|(_, segment)| segment.clone())
                .collect()
        })
        .collect()
}

fn unknown_key(file: &str, source: &str, path: &[String]) -> Diagnostic {
    let key = path.last().map(String::as_str).unwrap_or_default();
    let within = shown_path(&path[..path.len().saturating_sub(1)]);
    let message = if within.is_empty() {
        format!("unknown key `{key}`")
    } else {
        format!("unknown key `{key}` in `{within}`")
    };
    let at = locate_path(source, path);
    Diagnostic::error(message)
        .in_file(file)
        .at(at.map(|(line, _)| line), at.map(|(_, column)| column))
}

/// `rules[0].match`: a key path as a reader would write it.
fn shown_path(path: &[String]) -> String {
    let mut out = String::new();
    for segment in path {
        if segment.parse::<usize>().is_ok() {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(segment);
        }
    }
    out
}

fn segments(path: &serde_ignored::Path) -> Vec<String> {
    use serde_ignored::Path;
    match path {
        Path::Root => Vec::new(),
        Path::Seq { parent, index } => {
            let mut v = segments(parent);
            v.push(index.to_string());
            v
        }
        Path::Map { parent, key } => {
            let mut v = segments(parent);
            v.push(key.clone());
            v
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => segments(parent),
    }
}

/// A YAML parse error as a diagnostic at its line and column, in our words.
pub fn yaml_error(file: &str, error: &serde_saphyr::Error) -> Diagnostic {
    let location = error.location();
    Diagnostic::error(message(error)).in_file(file).at(
        location
            .as_ref()
            .map(|l| l.line() as usize)
            .filter(|&l| l > 0),
        location
            .as_ref()
            .map(|l| l.column() as usize)
            .filter(|&c| c > 0),
    )
}

fn message(error: &serde_saphyr::Error) -> String {
    use serde_saphyr::Error;
    match error.without_snippet() {
        Error::SerdeUnknownField {
            field, expected, ..
        } => {
            let expected: Vec<String> = expected.iter().map(|k| format!("`{k}`")).collect();
            format!(
                "unknown key `{field}` (known keys: {})",
                expected.join(", ")
            )
        }
        Error::DuplicateMappingKey { key: Some(key), .. } => {
            format!("duplicate key `{key}`: a key may appear only once in a mapping")
        }
        Error::DuplicateMappingKey { key: None, .. } => {
            "duplicate key: a key may appear only once in a mapping".to_owned()
        }
        other => {
            let text = UserMessageFormatter.format_message(other);
            // The position is the diagnostic's own; keep the message to its first line.
            text.lines().next().unwrap_or_default().trim().to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Doc {
        #[serde(default)]
        #[allow(dead_code)]
        items: Vec<Item>,
    }

    #[derive(Debug, Deserialize)]
    struct Item {
        #[allow(dead_code)]
        name: String,
    }

    #[test]
    fn every_unknown_key_is_reported_at_its_line() {
        let errors =
            parse::<Doc>("f.yaml", "items:\n  - name: a\n    nmae: b\nextra: 1\n").unwrap_err();
        let shown: Vec<String> = errors.iter().map(Diagnostic::human).collect();
        assert_eq!(
            shown,
            [
                "f.yaml:3:5: error: unknown key `nmae` in `items[0]`",
                "f.yaml:4:1: error: unknown key `extra`",
            ]
        );
    }

    #[test]
    fn a_duplicate_key_is_named_without_parser_option_names() {
        let errors = parse::<Doc>("f.yaml", "items: []\nitems: []\n").unwrap_err();
        assert_eq!(
            errors[0].human(),
            "f.yaml:2:1: error: duplicate key `items`: a key may appear only once in a mapping"
        );
    }
}
