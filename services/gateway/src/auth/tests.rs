use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::*;
use crate::auth::dev::{DevKeys, DEV_AUDIENCE, DEV_ISSUER, DEV_KEY_ID};

const RSA_PRIVATE: &[u8] = include_bytes!("../../tests/fixtures/rs256-test-private.pem");
const RSA_PUBLIC: &str = include_str!("../../tests/fixtures/rs256-test.pem");

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(sub: &str, exp_from_now: i64) -> serde_json::Value {
    serde_json::json!({
        "iss": DEV_ISSUER,
        "aud": DEV_AUDIENCE,
        "sub": sub,
        "nbf": now(),
        "exp": (now() as i64 + exp_from_now) as u64,
    })
}

struct Fixture {
    _dir: tempfile::TempDir,
    dev: DevKeys,
    rsa_file: std::path::PathBuf,
    auth: Authenticator,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let dev = DevKeys::ensure(&dir.path().join("keys")).unwrap();
    let rsa_file = dir.path().join("rsa-key.pem");
    std::fs::write(&rsa_file, RSA_PUBLIC).unwrap();
    let auth = Authenticator::new(TokenRules {
        key_files: vec![dev.jwks.clone(), rsa_file.clone()],
        issuer: DEV_ISSUER.into(),
        audience: DEV_AUDIENCE.into(),
        leeway: Duration::from_secs(5),
    })
    .unwrap();
    Fixture {
        _dir: dir,
        dev,
        rsa_file,
        auth,
    }
}

fn es256(f: &Fixture, claims: &serde_json::Value) -> String {
    let pem = std::fs::read(&f.dev.signing_key).unwrap();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(DEV_KEY_ID.into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_pem(&pem).unwrap()).unwrap()
}

fn rs256(kid: &str, claims: &serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
    )
    .unwrap()
}

#[test]
fn es256_from_jwks_and_rs256_from_pem_verify() {
    let f = fixture();
    let minted = f.dev.mint("u_alice", Duration::from_secs(60)).unwrap();
    assert_eq!(f.auth.verify(&minted), Ok(Subject("u_alice".into())));
    assert_eq!(
        f.auth.verify(&rs256("rsa-key", &claims("u_bob", 60))),
        Ok(Subject("u_bob".into()))
    );
    let header = http::HeaderValue::from_str(&format!("bearer {minted}")).unwrap();
    assert_eq!(
        f.auth.verify_header(Some(&header)),
        Ok(Subject("u_alice".into()))
    );
}

#[test]
fn claims_are_checked() {
    let f = fixture();
    let expired = claims("u", -60);
    assert!(f
        .auth
        .verify(&es256(&f, &expired))
        .unwrap_err()
        .to_string()
        .contains("expired"));
    // Within the leeway an expired token still passes.
    assert!(f.auth.verify(&es256(&f, &claims("u", -2))).is_ok());
    let mut future = claims("u", 600);
    future["nbf"] = (now() + 300).into();
    assert!(f
        .auth
        .verify(&es256(&f, &future))
        .unwrap_err()
        .to_string()
        .contains("not valid yet"));
    let mut wrong_issuer = claims("u", 60);
    wrong_issuer["iss"] = "someone-else".into();
    assert!(f
        .auth
        .verify(&es256(&f, &wrong_issuer))
        .unwrap_err()
        .to_string()
        .contains("issuer"));
    let mut wrong_audience = claims("u", 60);
    wrong_audience["aud"] = "other-api".into();
    assert!(f
        .auth
        .verify(&es256(&f, &wrong_audience))
        .unwrap_err()
        .to_string()
        .contains("audience"));
    let mut no_sub = claims("u", 60);
    no_sub.as_object_mut().unwrap().remove("sub");
    assert!(f
        .auth
        .verify(&es256(&f, &no_sub))
        .unwrap_err()
        .to_string()
        .contains("sub"));
    let weird = claims("u\u{7f}x", 60);
    assert!(f
        .auth
        .verify(&es256(&f, &weird))
        .unwrap_err()
        .to_string()
        .contains("printable"));
}

#[test]
fn the_key_pins_the_algorithm() {
    let f = fixture();
    // An RS256 token naming the ES256 key, and an HS256 token "signed" with
    // the public JWKS text (the classic confusion attack): both refused.
    let confused = rs256(DEV_KEY_ID, &claims("u", 60));
    assert!(f
        .auth
        .verify(&confused)
        .unwrap_err()
        .to_string()
        .contains("verifies ES256 tokens only"));
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(DEV_KEY_ID.into());
    let secret = std::fs::read(&f.dev.jwks).unwrap();
    let hmac = jsonwebtoken::encode(
        &header,
        &claims("u", 60),
        &EncodingKey::from_secret(&secret),
    )
    .unwrap();
    assert!(f.auth.verify(&hmac).is_err());
    let unknown = rs256("nope", &claims("u", 60));
    assert!(f
        .auth
        .verify(&unknown)
        .unwrap_err()
        .to_string()
        .contains("unknown key id"));
    // Two keys: a token must say which.
    let mut no_kid = Header::new(Algorithm::RS256);
    no_kid.kid = None;
    let anonymous = jsonwebtoken::encode(
        &no_kid,
        &claims("u", 60),
        &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
    )
    .unwrap();
    assert!(f
        .auth
        .verify(&anonymous)
        .unwrap_err()
        .to_string()
        .contains("no key id"));
    // A tampered signature.
    let good = f.dev.mint("u", Duration::from_secs(60)).unwrap();
    let tampered = format!("{}x", &good[..good.len() - 1]);
    assert!(f.auth.verify(&tampered).is_err());
}

#[test]
fn headers_other_than_bearer_are_refused() {
    let f = fixture();
    assert_eq!(f.auth.verify_header(None), Err(AuthError::Missing));
    let basic = http::HeaderValue::from_static("Basic dXNlcjpwYXNz");
    assert_eq!(
        f.auth.verify_header(Some(&basic)),
        Err(AuthError::NotBearer)
    );
    assert_eq!(
        Authenticator::without_keys().verify("a.b.c"),
        Err(AuthError::NoKeys)
    );
}

#[tokio::test]
async fn a_rotated_key_file_is_picked_up_without_a_restart() {
    let f = fixture();
    let reload = f.auth.spawn_reload(Duration::from_millis(50));
    let old = f.dev.mint("u", Duration::from_secs(60)).unwrap();
    assert!(f.auth.verify(&old).is_ok());
    // Rotate: a new key pair replaces the old one (a new JWKS, same kid).
    std::fs::remove_file(&f.dev.signing_key).unwrap();
    std::fs::remove_file(&f.dev.jwks).unwrap();
    let dir = f.dev.jwks.parent().unwrap().to_owned();
    let rotated = DevKeys::ensure(&dir).unwrap();
    let new = rotated.mint("u", Duration::from_secs(60)).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while f.auth.verify(&new).is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new key was not loaded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(f.auth.verify(&old).is_err(), "the old key is gone");
    // A broken file keeps the previous keys.
    std::fs::write(&f.rsa_file, "not a key").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(f.auth.verify(&new).is_ok());
    reload.abort();
}
