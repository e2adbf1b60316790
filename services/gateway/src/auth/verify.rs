//! Bearer tokens: `Authorization: Bearer <JWT>` verified against the
//! configured keys (re-read when their files change, so keys rotate without
//! a restart), with the algorithm pinned by the key, and `exp`, `nbf`, `iss`
//! and `aud` checked within a bounded clock skew. The token's `sub` is the
//! caller.

use std::{
    path::PathBuf,
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use jsonwebtoken::{errors::ErrorKind, Validation};

use super::keys::{KeyError, KeySet};

/// The longest clock skew the gateway accepts as a setting.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);
/// The longest subject the gateway passes on.
pub const MAX_SUBJECT_BYTES: usize = 128;

/// What tokens must say.
#[derive(Debug, Clone)]
pub struct TokenRules {
    /// Key files (JWKS or PEM).
    pub key_files: Vec<PathBuf>,
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` every token must carry.
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf` (at most [`MAX_LEEWAY`]).
    pub leeway: Duration,
}

/// Why a request is not authenticated (a 401; never echoes the token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("this API needs a bearer token: send Authorization: Bearer <token> (mesh token <user_id> makes one for the local mesh)")]
    Missing,
    /// Not `Bearer <token>`.
    #[error("the Authorization header must be \"Bearer <token>\"")]
    NotBearer,
    /// The gateway has no keys.
    #[error("this gateway has no token keys configured (--jwt-keys)")]
    NoKeys,
    /// The token is refused.
    #[error("invalid bearer token: {0}")]
    Invalid(String),
}

/// The verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject(pub String);

#[derive(serde::Deserialize)]
struct Claims {
    // Optional here so that a missing `sub` is reported as such by the
    // required-claims check, not as malformed JSON.
    #[serde(default)]
    sub: Option<String>,
}

/// Verifies bearer tokens with keys that follow their files.
#[derive(Debug, Clone)]
pub struct Authenticator {
    rules: Arc<TokenRules>,
    keys: Arc<RwLock<Arc<KeySet>>>,
    /// The key files' sizes and times when the keys were read.
    loaded_from: Arc<RwLock<Fingerprint>>,
}

type Fingerprint = Vec<Option<(u64, SystemTime)>>;

impl Authenticator {
    /// Loads the keys of `rules` (an unreadable or invalid file is an error).
    pub fn new(rules: TokenRules) -> Result<Self, KeyError> {
        // Before reading: a change while reading is seen by the next check.
        let loaded_from = fingerprint(&rules.key_files);
        let keys = KeySet::load(&rules.key_files)?;
        Ok(Self {
            rules: Arc::new(TokenRules {
                leeway: rules.leeway.min(MAX_LEEWAY),
                ..rules
            }),
            keys: Arc::new(RwLock::new(Arc::new(keys))),
            loaded_from: Arc::new(RwLock::new(loaded_from)),
        })
    }

    /// An authenticator without keys: every token is refused.
    pub fn without_keys() -> Self {
        Self {
            rules: Arc::new(TokenRules {
                key_files: Vec::new(),
                issuer: String::new(),
                audience: String::new(),
                leeway: Duration::ZERO,
            }),
            keys: Arc::default(),
            loaded_from: Arc::default(),
        }
    }

    /// Re-reads the key files whenever one of them changes (checked every
    /// `period`); a change that does not load keeps the previous keys.
    pub fn spawn_reload(&self, period: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let now = fingerprint(&this.rules.key_files);
                {
                    let mut seen = this.loaded_from.write().unwrap_or_else(|p| p.into_inner());
                    if *seen == now {
                        continue;
                    }
                    *seen = now;
                }
                match KeySet::load(&this.rules.key_files) {
                    Ok(keys) => {
                        tracing::info!(keys = keys.len(), "token keys reloaded");
                        *this.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
                    }
                    Err(error) => {
                        tracing::error!(%error, "token keys changed but do not load: keeping the previous keys")
                    }
                }
            }
        })
    }

    /// The caller of an `Authorization` header value.
    pub fn verify_header(&self, value: Option<&http::HeaderValue>) -> Result<Subject, AuthError> {
        let value = value.ok_or(AuthError::Missing)?;
        let text = value.to_str().map_err(|_| AuthError::NotBearer)?;
        let (scheme, token) = text.trim().split_once(' ').ok_or(AuthError::NotBearer)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::NotBearer);
        }
        self.verify(token.trim())
    }

    /// The caller a token names, if its signature and claims hold.
    pub fn verify(&self, token: &str) -> Result<Subject, AuthError> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
        if keys.is_empty() {
            return Err(AuthError::NoKeys);
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Invalid("not a JWT (header.payload.signature)".into()))?;
        let (kid, key) = keys.find(header.kid.as_deref()).ok_or_else(|| {
            AuthError::Invalid(match &header.kid {
                Some(kid) => format!("unknown key id {:?}", crate::bounded(kid)),
                None => "the token names no key id (kid)".into(),
            })
        })?;
        if header.alg != key.algorithm {
            return Err(AuthError::Invalid(format!(
                "key {kid:?} verifies {:?} tokens only, not {:?}",
                key.algorithm, header.alg
            )));
        }
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = self.rules.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.rules.issuer]);
        validation.set_audience(&[&self.rules.audience]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        let data =
            jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation).map_err(|error| {
                AuthError::Invalid(match error.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired".into(),
                    ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
                    ErrorKind::InvalidIssuer => {
                        format!("the issuer must be {:?}", self.rules.issuer)
                    }
                    ErrorKind::InvalidAudience => {
                        format!("the audience must include {:?}", self.rules.audience)
                    }
                    ErrorKind::InvalidSignature => "the signature does not verify".into(),
                    ErrorKind::MissingRequiredClaim(claim) => {
                        format!("the {claim:?} claim is missing")
                    }
                    _ => "the token is malformed".into(),
                })
            })?;
        let subject = data.claims.sub.unwrap_or_default();
        let printable = subject.bytes().all(|b| b.is_ascii_graphic());
        if subject.is_empty() || subject.len() > MAX_SUBJECT_BYTES || !printable {
            return Err(AuthError::Invalid(format!(
                "the sub claim must be 1 to {MAX_SUBJECT_BYTES} printable ASCII characters"
            )));
        }
        Ok(Subject(subject))
    }
}

/// The files' sizes and modification times.
fn fingerprint(files: &[PathBuf]) -> Fingerprint {
    files
        .iter()
        .map(|path| {
            std::fs::metadata(path).ok().map(|meta| {
                (
                    meta.len(),
                    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                )
            })
        })
        .collect()
}
