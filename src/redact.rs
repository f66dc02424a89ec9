//! Hiding secret-looking values in configs shown to people: by the API, the dashboard and
//! `diff`. What is sent to agents is never redacted.

pub const REDACTED: &str = "<redacted>";

const SECRET_KEYS: &[&str] = &[
    "password",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "bearer_token",
];

/// Whether a config key names a secret: `password`, `secret`, `token`, `api_key`,
/// `authorization`, anything containing one of those, or any key ending in `_key`.
pub fn is_secret_key(key: &str) -> bool {
    let key = key
        .trim()
        .trim_matches(|c| c == '"' || c == '\'')
        .to_ascii_lowercase();
    key.ends_with("_key") || SECRET_KEYS.iter().any(|s| key.contains(s))
}

/// The YAML text with the scalar values of secret-looking keys replaced by `<redacted>`.
pub fn redact_yaml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        out.push_str(&redact_line(line));
    }
    out
}

fn redact_line(line: &str) -> String {
    let body = line.trim_end_matches(['\n', '\r']);
    let ending = &line[body.len()..];
    let content = body.trim_start();
    let indent = &body[..body.len() - content.len()];
    let (prefix, rest) = match content.strip_prefix("- ") {
        Some(rest) => ("- ", rest),
        None => ("", content),
    };
    let Some((key, value)) = rest
        .split_once(": ")
        .or_else(|| rest.strip_suffix(':').map(|k| (k, "")))
    else {
        return line.to_owned();
    };
    let value = value.trim();
    if !is_secret_key(key)
        || value.is_empty()
        || value.starts_with('#')
        || value == "|"
        || value == ">"
    {
        return line.to_owned();
    }
    format!("{indent}{prefix}{key}: {REDACTED}{ending}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_are_replaced_and_the_rest_kept() {
        let yaml = "exporters:\n  otlp:\n    endpoint: tempo:4317\n    headers:\n      authorization: \"Bearer ${env:TOKEN}\"\n      api_key: abc\n    tls:\n      key_file: /etc/tls.key\n      client_key: inline\n  x:\n    password:\n      nested: 1\n";
        let out = redact_yaml(yaml);
        assert!(out.contains("endpoint: tempo:4317"));
        assert!(out.contains("      authorization: <redacted>\n"));
        assert!(out.contains("      api_key: <redacted>\n"));
        assert!(
            out.contains("key_file: /etc/tls.key"),
            "a path is not a secret"
        );
        assert!(out.contains("client_key: <redacted>"));
        assert!(
            out.contains("    password:\n      nested: 1"),
            "maps are kept, their scalars checked"
        );
        assert!(!out.contains("abc"));
    }
}
