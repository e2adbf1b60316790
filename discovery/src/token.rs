//! The ACL token: none, a value, or a file read again when it changes (so a
//! rotated token needs no restart). Never printed.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::error::ConfigError;

/// How often the token file is looked at again between calls.
const RECHECK: Duration = Duration::from_secs(1);

/// Where the token comes from; clones share the file's cache.
#[derive(Clone)]
pub(crate) struct TokenSource {
    kind: Arc<Kind>,
}

enum Kind {
    None,
    Value(String),
    File {
        path: PathBuf,
        /// `CONSUL_HTTP_TOKEN`, used while the file is empty (as Consul does).
        fallback: Option<String>,
        state: Mutex<FileState>,
    },
}

struct FileState {
    token: Option<String>,
    read_at: Instant,
}

impl TokenSource {
    /// `file` (when given) wins over `value`, like in Consul's client; the file
    /// is read now, so that a missing file fails at start-up.
    pub(crate) fn new(value: Option<String>, file: Option<PathBuf>) -> Result<Self, ConfigError> {
        let value = value.filter(|token| !token.is_empty());
        if let Some(token) = &value {
            validate(token, "CONSUL_HTTP_TOKEN")?;
        }
        let kind = match (file, value) {
            (Some(path), fallback) => {
                let token = read(&path)?;
                Kind::File {
                    path,
                    fallback,
                    state: Mutex::new(FileState {
                        token,
                        read_at: Instant::now(),
                    }),
                }
            }
            (None, Some(token)) => Kind::Value(token),
            (None, None) => Kind::None,
        };
        Ok(Self {
            kind: Arc::new(kind),
        })
    }

    /// The token to send now (the file is looked at again at most every second).
    pub(crate) fn current(&self) -> Option<String> {
        match &*self.kind {
            Kind::None => None,
            Kind::Value(token) => Some(token.clone()),
            Kind::File {
                path,
                fallback,
                state,
            } => {
                let mut state = state.lock().unwrap_or_else(|poison| poison.into_inner());
                if state.read_at.elapsed() >= RECHECK {
                    reload(path, &mut state);
                }
                state.token.clone().or_else(|| fallback.clone())
            }
        }
    }

    /// Reads the token file now (after Consul refused a token); whether the
    /// token changed.
    pub(crate) fn refresh(&self) -> bool {
        match &*self.kind {
            Kind::File { path, state, .. } => {
                let mut state = state.lock().unwrap_or_else(|poison| poison.into_inner());
                let before = state.token.clone();
                reload(path, &mut state);
                state.token != before
            }
            _ => false,
        }
    }

    /// `CONSUL_HTTP_TOKEN_FILE <path>`, `CONSUL_HTTP_TOKEN` or `no token`.
    pub(crate) fn origin(&self) -> String {
        match &*self.kind {
            Kind::None => "no token".to_owned(),
            Kind::Value(_) => "CONSUL_HTTP_TOKEN".to_owned(),
            Kind::File { path, .. } => format!("CONSUL_HTTP_TOKEN_FILE {}", path.display()),
        }
    }
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.kind {
            Kind::None => f.write_str("None"),
            Kind::Value(_) => f.write_str("\"<redacted>\""),
            Kind::File { path, .. } => write!(f, "File({}, <redacted>)", path.display()),
        }
    }
}

/// Keeps the last good token when the file cannot be read or holds junk (a
/// rotation in progress); says so once per problem.
fn reload(path: &Path, state: &mut FileState) {
    state.read_at = Instant::now();
    match read(path) {
        Ok(token) => state.token = token,
        Err(error) => {
            tracing::warn!(%error, "keeping the last Consul token");
        }
    }
}

/// The trimmed content of the token file; `None` when empty.
fn read(path: &Path) -> Result<Option<String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::TokenFile {
        path: path.display().to_string(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Ok(None);
    }
    validate(token, &format!("the token file {}", path.display()))?;
    Ok(Some(token.to_owned()))
}

fn validate(token: &str, origin: &str) -> Result<(), ConfigError> {
    // Visible ASCII only: a valid header value, and no way to smuggle a second header.
    if token.bytes().all(|byte| byte.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(ConfigError::InvalidToken {
            origin: origin.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewritten_file_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let source = TokenSource::new(Some("fallback".into()), Some(path.clone())).unwrap();
        let clone = source.clone();
        assert_eq!(source.current().as_deref(), Some("first"));

        std::fs::write(&path, "second").unwrap();
        assert!(source.refresh(), "the token changed");
        assert_eq!(clone.current().as_deref(), Some("second"), "clones share");
        assert!(!source.refresh(), "unchanged");

        // Mid-rotation junk or a missing file keeps the last good token.
        std::fs::write(&path, "bad token\n").unwrap();
        assert!(!source.refresh());
        std::fs::remove_file(&path).unwrap();
        assert!(!source.refresh());
        assert_eq!(source.current().as_deref(), Some("second"));

        // An empty file falls back to CONSUL_HTTP_TOKEN, as in Consul.
        std::fs::write(&path, "  \n").unwrap();
        assert!(source.refresh());
        assert_eq!(source.current().as_deref(), Some("fallback"));

        let debug = format!("{source:?}");
        assert!(
            !debug.contains("second") && !debug.contains("fallback"),
            "{debug}"
        );
    }

    #[test]
    fn a_bad_token_is_refused_without_echoing_it() {
        let error = TokenSource::new(Some("a\nb".into()), None).unwrap_err();
        assert!(error.to_string().contains("CONSUL_HTTP_TOKEN"), "{error}");
        assert!(!error.to_string().contains("a\nb"));
    }
}
