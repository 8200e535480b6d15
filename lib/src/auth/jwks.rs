//! JWT verification against a JWKS: EdDSA, RS256 and ES256; `exp`/`nbf` with
//! a small leeway, audience and issuer checked; the key set is cached per
//! instance and refetched on an unknown `kid` at most once per refetch gap
//! (`JWKS_REFETCH_SECONDS`, default a minute).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header, jwk::JwkSet};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};
use uuid::Uuid;

use crate::otel::http::SendTraced;

const LEEWAY_SECS: u64 = 30;
const ALLOWED: [Algorithm; 3] = [Algorithm::EdDSA, Algorithm::RS256, Algorithm::ES256];

/// Why a token was refused: 401 `UNAUTHENTICATED` (the reason is logged), but for
/// [`AuthError::KeySet`], which answers 503: the key set may be back in a moment.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The request has no `Authorization: Bearer` token.
    #[error("no bearer token")]
    Missing,
    /// The token fails a check (format, algorithm, signature, expiry, audience, issuer, `sub`).
    #[error("token rejected: {0}")]
    Invalid(String),
    /// No key in the key set has the token's `kid` (`None`: the token has none).
    #[error("no key for kid {0:?}")]
    UnknownKey(Option<String>),
    /// The key set could not be fetched or read (answered 503, not 401).
    #[error("key set unavailable: {0}")]
    KeySet(String),
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

#[derive(Default)]
struct Cache {
    keys: HashMap<String, DecodingKey>,
    /// Keys without a `kid`, usable when the token has none either.
    anonymous: Vec<DecodingKey>,
    fetched_at: Option<Instant>,
}

/// Verifies user tokens; one per instance, shared by all requests.
pub struct Verifier {
    http: crate::http_client::HttpClient,
    url: String,
    audience: String,
    issuers: Vec<String>,
    refetch_gap: Duration,
    cache: RwLock<Cache>,
    refetch: Mutex<()>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new(
        http: crate::http_client::HttpClient,
        url: &str,
        audience: &str,
        issuers: &[String],
        refetch_gap: Duration,
    ) -> Self {
        Verifier {
            http,
            url: url.to_string(),
            audience: audience.to_string(),
            issuers: issuers.to_vec(),
            refetch_gap,
            cache: RwLock::default(),
            refetch: Mutex::new(()),
        }
    }

    /// Verifies a token and returns the user id (`sub`).
    pub async fn verify(&self, token: &str) -> Result<Uuid, AuthError> {
        let header = decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        if !ALLOWED.contains(&header.alg) {
            return Err(AuthError::Invalid(format!(
                "algorithm {:?} not accepted",
                header.alg
            )));
        }
        let key = match self.key(header.kid.as_deref()).await? {
            Some(k) => k,
            None => {
                self.refresh().await?;
                self.key(header.kid.as_deref())
                    .await?
                    .ok_or(AuthError::UnknownKey(header.kid.clone()))?
            }
        };
        let mut v = Validation::new(header.alg);
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.set_audience(&[&self.audience]);
        v.set_issuer(&self.issuers);
        v.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
        let data =
            decode::<Claims>(token, &key, &v).map_err(|e| AuthError::Invalid(e.to_string()))?;
        Uuid::parse_str(&data.claims.sub)
            .map_err(|_| AuthError::Invalid("sub is not a uuid".into()))
    }

    /// The cached key for `kid`, loading the set on first use.
    async fn key(&self, kid: Option<&str>) -> Result<Option<DecodingKey>, AuthError> {
        if self.cache.read().await.fetched_at.is_none() {
            self.refresh().await?;
        }
        let cache = self.cache.read().await;
        Ok(match kid {
            Some(k) => cache.keys.get(k).cloned(),
            None => match (cache.anonymous.as_slice(), cache.keys.len()) {
                ([only], 0) => Some(only.clone()),
                ([], 1) => cache.keys.values().next().cloned(),
                _ => None,
            },
        })
    }

    /// Refetches the key set unless it was fetched within the refetch gap.
    async fn refresh(&self) -> Result<(), AuthError> {
        let _one_at_a_time = self.refetch.lock().await;
        if self
            .cache
            .read()
            .await
            .fetched_at
            .is_some_and(|t| t.elapsed() < self.refetch_gap)
        {
            return Ok(());
        }
        let set: JwkSet = self
            .http
            .get()
            .get(&self.url)
            .timeout(Duration::from_secs(5))
            .send_traced("jwks")
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| AuthError::KeySet(e.to_string()))?
            .json()
            .await
            .map_err(|e| AuthError::KeySet(e.to_string()))?;
        let mut fresh = Cache {
            fetched_at: Some(Instant::now()),
            ..Cache::default()
        };
        for jwk in &set.keys {
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            match &jwk.common.key_id {
                Some(kid) => {
                    fresh.keys.insert(kid.clone(), key);
                }
                None => fresh.anonymous.push(key),
            }
        }
        *self.cache.write().await = fresh;
        Ok(())
    }
}
