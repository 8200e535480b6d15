//! JWT verification with keys made in the test: each accepted algorithm
//! (EdDSA, RS256, ES256), every way a token can be wrong, and key rotation
//! through the key set the API fetches.

use std::time::Duration;

use aws_lc_rs::{
    encoding::AsDer,
    rand::SystemRandom,
    rsa::{KeyPair as RsaKeyPair, KeySize},
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair},
};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, jwk::Jwk};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::{ISSUER, Stack};

/// A signing key made for the test, with its public JWK.
struct TestKey {
    alg: Algorithm,
    kid: String,
    signing: EncodingKey,
    jwk: Value,
}

impl TestKey {
    fn ed25519() -> TestKey {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let public = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .unwrap()
            .public_key()
            .as_ref()
            .to_vec();
        let kid = format!("ed-{}", Uuid::new_v4());
        TestKey {
            alg: Algorithm::EdDSA,
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "kid": kid, "x": URL_SAFE_NO_PAD.encode(public)}),
            signing: EncodingKey::from_ed_der(pkcs8.as_ref()),
            kid,
        }
    }

    fn rsa() -> TestKey {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            STANDARD.encode(pkcs8.as_ref())
        );
        Self::from_jwk(
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        )
    }

    fn p256() -> TestKey {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        Self::from_jwk(Algorithm::ES256, EncodingKey::from_ec_der(pkcs8.as_ref()))
    }

    /// A key whose public JWK jsonwebtoken derives from the private key.
    fn from_jwk(alg: Algorithm, signing: EncodingKey) -> TestKey {
        let kid = format!("{alg:?}-{}", Uuid::new_v4());
        let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&signing, alg).unwrap()).unwrap();
        jwk["kid"] = json!(kid);
        TestKey {
            alg,
            kid,
            signing,
            jwk,
        }
    }

    /// A token with `claims`, signed by this key.
    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        encode(&header, claims, &self.signing).unwrap()
    }
}

/// Valid claims for `user`, changed by `edit`.
fn claims(user: Uuid, edit: impl FnOnce(&mut Value)) -> Value {
    let now = chrono::Utc::now().timestamp();
    let mut c = json!({"sub": user, "iss": ISSUER, "aud": "manacore", "iat": now, "nbf": now, "exp": now + 600});
    edit(&mut c);
    c
}

/// Serves exactly `keys` as the key set.
fn publish(s: &Stack, keys: &[&TestKey]) {
    *s.jwks.write().unwrap() =
        json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
}

/// Status and problem code of an authenticated read with `token`.
async fn read_with(s: &Stack, token: &str) -> (StatusCode, Option<String>) {
    let res = s
        .http
        .get(format!("{}/api/v1/images", s.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    (status, body["code"].as_str().map(str::to_string))
}

fn unauthenticated() -> (StatusCode, Option<String>) {
    (StatusCode::UNAUTHORIZED, Some("UNAUTHENTICATED".into()))
}

#[tokio::test]
async fn eddsa_rs256_and_es256_tokens_are_accepted() {
    let s = Stack::start().await;
    let keys = [TestKey::ed25519(), TestKey::rsa(), TestKey::p256()];
    publish(&s, &keys.iter().collect::<Vec<_>>());
    for key in &keys {
        let token = key.sign(&claims(Uuid::new_v4(), |_| {}));
        assert_eq!(
            read_with(&s, &token).await,
            (StatusCode::OK, None),
            "{:?}",
            key.alg
        );
    }
}

#[tokio::test]
async fn wrong_tokens_are_401_unauthenticated() {
    let s = Stack::start().await;
    let (key, rsa, stranger) = (TestKey::ed25519(), TestKey::rsa(), TestKey::p256());
    publish(&s, &[&key, &rsa]);
    let user = Uuid::new_v4();
    let now = chrono::Utc::now().timestamp();
    let mut cases = vec![
        (
            "expired",
            key.sign(&claims(user, |c| c["exp"] = json!(now - 3600))),
        ),
        (
            "not yet valid",
            key.sign(&claims(user, |c| c["nbf"] = json!(now + 3600))),
        ),
        (
            "wrong audience",
            key.sign(&claims(user, |c| c["aud"] = json!("another-app"))),
        ),
        (
            "wrong issuer",
            key.sign(&claims(user, |c| c["iss"] = json!("https://evil.example"))),
        ),
        (
            "no expiry",
            key.sign(&claims(user, |c| {
                c.as_object_mut().unwrap().remove("exp");
            })),
        ),
        (
            "sub not a uuid",
            key.sign(&claims(user, |c| c["sub"] = json!("admin"))),
        ),
        ("unknown key", stranger.sign(&claims(user, |_| {}))),
    ];
    // A token naming a published kid but signed by another Ed25519 key.
    let impostor = TestKey {
        kid: key.kid.clone(),
        ..TestKey::ed25519()
    };
    cases.push(("forged", impostor.sign(&claims(user, |_| {}))));
    // `alg: none`: no signature at all.
    let b64 = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
    cases.push((
        "alg none",
        format!(
            "{}.{}.",
            b64(json!({"alg": "none", "typ": "JWT", "kid": key.kid})),
            b64(claims(user, |_| {}))
        ),
    ));
    // HS256 keyed with the RSA public key (algorithm confusion).
    let public_jwk = serde_json::to_vec(&rsa.jwk).unwrap();
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(rsa.kid.clone());
    cases.push((
        "HS256 with the public key as secret",
        encode(
            &hs,
            &claims(user, |_| {}),
            &EncodingKey::from_secret(&public_jwk),
        )
        .unwrap(),
    ));
    for (name, token) in &cases {
        assert_eq!(read_with(&s, token).await, unauthenticated(), "{name}");
    }
    // The same key and claims, done right, pass: each case failed for its own reason.
    assert_eq!(
        read_with(&s, &key.sign(&claims(user, |_| {}))).await,
        (StatusCode::OK, None)
    );
}

#[tokio::test]
async fn a_rotated_in_key_is_picked_up_after_a_refetch() {
    let s = Stack::with(&[("JWKS_REFETCH_SECONDS", "2")]).await;
    let (old, new) = (TestKey::ed25519(), TestKey::rsa());
    publish(&s, &[&old]);
    let user = Uuid::new_v4();
    assert_eq!(
        read_with(&s, &old.sign(&claims(user, |_| {}))).await,
        (StatusCode::OK, None)
    );
    publish(&s, &[&old, &new]);
    let token = new.sign(&claims(user, |_| {}));
    // Within the refetch gap an unknown kid does not fetch the set again.
    assert_eq!(read_with(&s, &token).await, unauthenticated());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(read_with(&s, &token).await, (StatusCode::OK, None));
    assert_eq!(
        read_with(&s, &old.sign(&claims(user, |_| {}))).await,
        (StatusCode::OK, None),
        "keys still published stay valid"
    );
}

#[tokio::test]
async fn a_key_set_outage_is_503_not_401() {
    let s = Stack::with(&[("JWKS_URL", "http://127.0.0.1:9/jwks.json")]).await;
    let (status, p) = s
        .call(
            Method::GET,
            "/api/v1/credits/balance",
            Some(Uuid::new_v4()),
            None,
        )
        .await;
    assert_eq!(
        (status, p["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("SERVICE_UNAVAILABLE")),
        "{p}"
    );
    // Without a token it is still the caller's error.
    let (status, _) = s
        .call(Method::GET, "/api/v1/credits/balance", None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
