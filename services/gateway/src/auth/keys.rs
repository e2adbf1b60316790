//! The keys tokens are verified with: JWKS files (`{"keys": [...]}`) or PEM
//! public keys (one per file, its id the file's stem), each key pinned to
//! one algorithm — ES256 (EC P-256) or RS256 (RSA) — so a token cannot
//! choose how it is checked.

use std::{collections::HashMap, path::Path};

use jsonwebtoken::{
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm},
    Algorithm, DecodingKey,
};

/// One verification key.
#[derive(Clone)]
pub struct Key {
    /// The only algorithm tokens signed with this key may use.
    pub algorithm: Algorithm,
    /// The key.
    pub decoding: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// Every key, by key id.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, Key>,
}

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is neither a JWKS nor a PEM public key.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl KeySet {
    /// Reads every file (JWKS or PEM). Two keys with one id are an error.
    pub fn load(paths: &[impl AsRef<Path>]) -> Result<Self, KeyError> {
        let mut set = Self::default();
        for path in paths {
            let path = path.as_ref();
            let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
                path: path.display().to_string(),
                source,
            })?;
            let invalid = |reason: String| KeyError::Invalid {
                path: path.display().to_string(),
                reason,
            };
            let keys = if text.trim_start().starts_with('{') {
                jwks(&text).map_err(invalid)?
            } else {
                let kid = path
                    .file_stem()
                    .and_then(|stem| stem.to_str())
                    .ok_or_else(|| invalid("the file name is not UTF-8".into()))?
                    .to_owned();
                vec![(kid, pem(&text).map_err(invalid)?)]
            };
            for (kid, key) in keys {
                if set.keys.insert(kid.clone(), key).is_some() {
                    return Err(invalid(format!("key id {kid:?} appears twice")));
                }
            }
        }
        Ok(set)
    }

    /// The key a token names (`kid`); without one, the only key there is.
    pub fn find(&self, kid: Option<&str>) -> Option<(&str, &Key)> {
        match kid {
            Some(kid) => self.keys.get_key_value(kid).map(|(k, v)| (k.as_str(), v)),
            None if self.keys.len() == 1 => self.keys.iter().next().map(|(k, v)| (k.as_str(), v)),
            None => None,
        }
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The keys of a JWKS document; keys of other types are skipped (logged),
/// a document without a usable key is an error.
fn jwks(text: &str) -> Result<Vec<(String, Key)>, String> {
    let document: serde_json::Value =
        serde_json::from_str(text).map_err(|error| format!("not valid JSON: {error}"))?;
    let entries = document
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .ok_or("a JWKS document needs a \"keys\" array")?;
    let mut keys = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let jwk: Jwk = match serde_json::from_value(entry.clone()) {
            Ok(jwk) => jwk,
            Err(error) => {
                tracing::warn!(index, %error, "skipping a JWKS key of an unsupported type");
                continue;
            }
        };
        let Some(kid) = jwk.common.key_id.clone() else {
            return Err(format!("key {index} has no \"kid\""));
        };
        let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
            (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
                if ec.curve == EllipticCurve::P256 =>
            {
                Algorithm::ES256
            }
            (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
            (_, algorithm) => {
                tracing::warn!(%kid, ?algorithm, "skipping a JWKS key: only ES256 (P-256) and RS256 keys are accepted");
                continue;
            }
        };
        let decoding =
            DecodingKey::from_jwk(&jwk).map_err(|error| format!("key {kid:?}: {error}"))?;
        keys.push((
            kid,
            Key {
                algorithm,
                decoding,
            },
        ));
    }
    if keys.is_empty() {
        return Err("no ES256 or RS256 key in the JWKS document".into());
    }
    Ok(keys)
}

/// A PEM public key: EC P-256 (ES256) or RSA (RS256).
fn pem(text: &str) -> Result<Key, String> {
    if let Ok(decoding) = DecodingKey::from_ec_pem(text.as_bytes()) {
        return Ok(Key {
            algorithm: Algorithm::ES256,
            decoding,
        });
    }
    if let Ok(decoding) = DecodingKey::from_rsa_pem(text.as_bytes()) {
        return Ok(Key {
            algorithm: Algorithm::RS256,
            decoding,
        });
    }
    Err("not a PEM public key of EC P-256 or RSA, nor a JWKS document".into())
}
