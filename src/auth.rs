//! Token files and the checks that use them: one token a line, optionally `name:token`, blank
//! lines and `#` comments ignored, read again whenever the file changes on disk. Tokens are
//! compared in constant time.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub name: String,
    secret: String,
}

/// A token file, re-read when its modification time or size changes.
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    cache: Mutex<Cached>,
}

/// The tokens last read, and the file's modification time and size when they were.
#[derive(Debug, Default)]
struct Cached {
    stamp: Option<(SystemTime, u64)>,
    tokens: Vec<Token>,
}

impl Token {
    /// The token itself, for clients that send it (`diff --fleet`).
    pub fn secret(&self) -> &str {
        &self.secret
    }
}

pub fn parse_tokens(text: &str) -> Vec<Token> {
    text.lines()
        .enumerate()
        .filter_map(|(index, line)| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let (name, secret) = match line.split_once(':') {
                Some((name, secret)) if !name.trim().is_empty() && !secret.trim().is_empty() => {
                    (name.trim().to_owned(), secret.trim().to_owned())
                }
                _ => (format!("line-{}", index + 1), line.to_owned()),
            };
            Some(Token { name, secret })
        })
        .collect()
}

impl TokenFile {
    /// Opens a token file; it must be readable and hold at least one token.
    pub fn open(path: &Path) -> Result<TokenFile, String> {
        let file = TokenFile {
            path: path.to_owned(),
            cache: Mutex::default(),
        };
        if file.tokens().is_empty() {
            return Err(format!(
                "token file {} is unreadable or holds no token",
                path.display()
            ));
        }
        Ok(file)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current tokens; the file is read again when it changed.
    pub fn tokens(&self) -> Vec<Token> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        if stamp.is_some() && stamp != cache.stamp {
            match std::fs::read_to_string(&self.path) {
                Ok(text) => {
                    let tokens = parse_tokens(&text);
                    if cache.stamp.is_some() {
                        tracing::info!(file = %self.path.display(), tokens = tokens.len(), "token file reloaded");
                    }
                    *cache = Cached { stamp, tokens };
                }
                Err(e) => {
                    tracing::warn!(file = %self.path.display(), error = %e, "cannot read token file: keeping the tokens read before")
                }
            }
        }
        cache.tokens.clone()
    }

    /// The name of the token that equals `presented`, compared in constant time against every
    /// token of the file.
    pub fn check(&self, presented: &str) -> Option<String> {
        let mut found = None;
        for token in self.tokens() {
            let equal: bool = token.secret.as_bytes().ct_eq(presented.as_bytes()).into();
            if equal && found.is_none() {
                found = Some(token.name);
            }
        }
        found
    }
}

/// The token of an `Authorization: Bearer …` header.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_with_and_without_names() {
        let tokens = parse_tokens("# comment\n\nci:abc123\n  plain-token  \nbroken:\n");
        assert_eq!(tokens.len(), 3);
        assert_eq!(
            (tokens[0].name.as_str(), tokens[0].secret.as_str()),
            ("ci", "abc123")
        );
        assert_eq!(
            (tokens[1].name.as_str(), tokens[1].secret.as_str()),
            ("line-4", "plain-token")
        );
        assert_eq!(tokens[2].secret, "broken:");
    }

    #[test]
    fn a_changed_file_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "ops:first\n").unwrap();
        let file = TokenFile::open(&path).unwrap();
        assert_eq!(file.check("first").as_deref(), Some("ops"));
        assert_eq!(file.check("second"), None);
        std::fs::write(&path, "ops:first\nci:second-token\n").unwrap();
        assert_eq!(file.check("second-token").as_deref(), Some("ci"));
    }
}
