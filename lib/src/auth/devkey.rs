//! An Ed25519 signing key for local development and tests: it publishes
//! itself as a JWKS and mints user tokens that [`super::Verifier`] accepts.

use aws_lc_rs::{
    rand::SystemRandom,
    signature::{Ed25519KeyPair, KeyPair},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use uuid::Uuid;

/// A PKCS#8 Ed25519 key with its key id.
#[derive(Clone)]
pub struct DevKey {
    pkcs8: Vec<u8>,
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
        json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": self.kid, "x": x}]})
    }

    /// A token for `user_id` valid for `ttl_secs`, with the given issuer and audience.
    pub fn token(&self, user_id: Uuid, issuer: &str, audience: &str, ttl_secs: i64) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = json!({"sub": user_id, "iss": issuer, "aud": audience, "iat": now, "nbf": now, "exp": now + ttl_secs});
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        encode(&header, &claims, &EncodingKey::from_ed_der(&self.pkcs8)).expect("Ed25519 signing")
    }
}
