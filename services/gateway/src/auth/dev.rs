//! The local mesh's token key: `mesh up` creates an ES256 key pair once
//! (the private key 0600 in `.mesh/gateway/`, the public one as a JWKS the
//! gateway reads), and `mesh token <user_id>` mints short-lived tokens
//! with it. For local use only: a deployment brings its identity
//! provider's JWKS instead.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use ring::{
    rand::SystemRandom,
    signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING},
};

/// The `iss` of local tokens.
pub const DEV_ISSUER: &str = "mesh-dev";
/// The `aud` of local tokens.
pub const DEV_AUDIENCE: &str = "mesh";
/// The key id of the local key.
pub const DEV_KEY_ID: &str = "mesh-dev";

/// Why a local key or token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DevKeyError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The key could not be generated or used.
    #[error("the token key at {path} is unusable: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The local key pair's files.
#[derive(Debug, Clone)]
pub struct DevKeys {
    /// The private key (PKCS#8 PEM, mode 0600).
    pub signing_key: PathBuf,
    /// The public key as a JWKS document (what `--jwt-keys` reads).
    pub jwks: PathBuf,
}

impl DevKeys {
    /// The files in `dir` (which may not exist yet).
    pub fn at(dir: &Path) -> Self {
        Self {
            signing_key: dir.join("token-signing-key.pem"),
            jwks: dir.join("jwks.json"),
        }
    }

    /// The files in `dir`, created (with a new key pair) when missing.
    pub fn ensure(dir: &Path) -> Result<Self, DevKeyError> {
        let keys = Self::at(dir);
        if keys.signing_key.is_file() && keys.jwks.is_file() {
            return Ok(keys);
        }
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| DevKeyError::Io { path, source }
        };
        fs::create_dir_all(dir).map_err(io(dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).map_err(|_| {
                DevKeyError::Key {
                    path: keys.signing_key.clone(),
                    reason: "cannot generate an EC P-256 key".into(),
                }
            })?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|error| DevKeyError::Key {
                path: keys.signing_key.clone(),
                reason: error.to_string(),
            })?;
        let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.as_ref().to_vec()));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&keys.signing_key)
            .map_err(io(&keys.signing_key))?;
        file.write_all(pem.as_bytes())
            .map_err(io(&keys.signing_key))?;
        fs::write(&keys.jwks, jwks(pair.public_key().as_ref())).map_err(io(&keys.jwks))?;
        Ok(keys)
    }

    /// A token for `subject`, valid for `ttl`.
    pub fn mint(&self, subject: &str, ttl: Duration) -> Result<String, DevKeyError> {
        let pem = fs::read(&self.signing_key).map_err(|source| DevKeyError::Io {
            path: self.signing_key.clone(),
            source,
        })?;
        mint(&pem, DEV_KEY_ID, DEV_ISSUER, DEV_AUDIENCE, subject, ttl).map_err(|error| {
            DevKeyError::Key {
                path: self.signing_key.clone(),
                reason: error.to_string(),
            }
        })
    }
}

/// An ES256 token signed with the PKCS#8 PEM `private_key`.
pub fn mint(
    private_key: &[u8],
    kid: &str,
    issuer: &str,
    audience: &str,
    subject: &str,
    ttl: Duration,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let claims = serde_json::json!({
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now + ttl.as_secs().max(1),
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_pem(private_key)?,
    )
}

/// A JWKS document holding the P-256 public key `point` (uncompressed: 0x04 ‖ x ‖ y).
fn jwks(point: &[u8]) -> String {
    let (x, y) = point[1..].split_at(32);
    let document = serde_json::json!({
        "keys": [{
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(x),
            "y": URL_SAFE_NO_PAD.encode(y),
            "kid": DEV_KEY_ID,
            "alg": "ES256",
            "use": "sig",
        }]
    });
    serde_json::to_string_pretty(&document).expect("JSON values serialize") + "\n"
}
