//! An Ed25519 signing key for local development and tests: it publishes
//! itself as a JWKS and mints user tokens that [`super::Verifier`] accepts.

use aws_lc_rs::{
    rand::SystemRandom,
    signature::{Ed25519KeyPair, KeyPair},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::Value;
use uuid::Uuid;

/// A PKCS#8 Ed25519 key with its key id.
#[derive(Clone)]
pub struct DevKey {
    pkcs8: Vec<u8>,
    /// The key id (`kid`) in the JWKS and in the tokens' headers.
    pub kid: String,
}

impl DevKey {
    /// A new random key.
    pub fn generate(kid: &str) -> Self {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("system randomness");
        DevKey {
            pkcs8: doc.as_ref().to_vec(),
            kid: kid.to_string(),
        }
    }

    /// A key from its PKCS#8 DER bytes.
    pub fn from_pkcs8(pkcs8: Vec<u8>, kid: &str) -> Result<Self, String> {
        Ed25519KeyPair::from_pkcs8(&pkcs8)
            .map_err(|e| format!("not an Ed25519 PKCS#8 key: {e}"))?;
        Ok(DevKey {
            pkcs8,
            kid: kid.to_string(),
        })
    }

    /// The PKCS#8 DER bytes (to store the key).
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public key as a JWKS document.
    pub fn jwks(&self) -> Value {
        let pair = Ed25519KeyPair::from_pkcs8(&self.pkcs8).expect("validated at construction");
        let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        let key = Jwk {
            kty: "OKP",
            crv: "Ed25519",
            alg: "EdDSA",
            r#use: "sig",
            kid: &self.kid,
            x: &x,
        };
        serde_json::to_value(Jwks { keys: [key] }).unwrap_or(Value::Null)
    }

    /// A token for `user_id` valid for `ttl_secs`, with the given issuer and audience.
    pub fn token(&self, user_id: Uuid, issuer: &str, audience: &str, ttl_secs: i64) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user_id,
            iss: issuer,
            aud: audience,
            iat: now,
            nbf: now,
            exp: now + ttl_secs,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        encode(&header, &claims, &EncodingKey::from_ed_der(&self.pkcs8)).expect("Ed25519 signing")
    }
}

/// A JWKS document of one key.
#[derive(serde::Serialize)]
struct Jwks<'a> {
    keys: [Jwk<'a>; 1],
}

/// An Ed25519 public key (RFC 8037).
#[derive(serde::Serialize)]
struct Jwk<'a> {
    kty: &'static str,
    crv: &'static str,
    alg: &'static str,
    r#use: &'static str,
    kid: &'a str,
    /// The public key, base64url.
    x: &'a str,
}

/// A development token's claims.
#[derive(serde::Serialize)]
struct Claims<'a> {
    sub: Uuid,
    iss: &'a str,
    aud: &'a str,
    iat: i64,
    nbf: i64,
    exp: i64,
}
