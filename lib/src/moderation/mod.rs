//! Prompt moderation, before anything is held, and image moderation of
//! source images and (per model) outputs (docs/architecture.md,
//! "Moderation"): the blocklist ([`blocklist`], terms kept as data in
//! `moderation_terms`) and, when configured, a moderation provider
//! ([`openai`], OpenAI's moderation endpoint or the local simulator).
//! A refusal is [`Error::ContentRefused`] with its categories (and the
//! blocklist term that matched, so the user can rephrase); a provider that
//! cannot answer is [`Error::ModerationUnavailable`] unless the settings
//! fail open.
//!
//! Domain: may import `db`, `http_client`, `telemetry`, `otel` and `config`;
//! never the edge.

pub mod blocklist;
pub mod openai;

use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::{
    AppState, Error, Result,
    db::moderation as rows,
    telemetry::{self, metric},
};

/// How long the blocklist is cached per instance.
const TERMS_TTL: Duration = Duration::from_secs(60);

/// Checks the texts of a request (prompt, negative prompt, style: empty ones
/// are skipped) for `user`. Refusals are counted (metric and per user).
pub async fn check_texts(st: &AppState, user: Uuid, texts: &[&str]) -> Result<()> {
    let texts: Vec<&str> = texts
        .iter()
        .copied()
        .filter(|t| !t.trim().is_empty())
        .collect();
    let refusal = match refusal(st, &texts).await {
        Ok(None) => return Ok(()),
        Ok(Some(refused)) => refused,
        Err(e) => return Err(e),
    };
    telemetry::count(metric::CONTENT_REFUSED, 1);
    if let Err(e) = rows::count_refusal(&**st.db.get().await?, user).await {
        tracing::warn!(%user, error = %e, "refusal not counted");
    }
    if let Error::ContentRefused { categories, term } = &refusal {
        tracing::info!(%user, ?categories, ?term, "request refused for its content");
    }
    Err(refusal)
}

/// Checks an image (an output about to be stored, or a source image) with the
/// provider, when there is one: [`Error::ContentRefused`] with its categories
/// (counted), [`Error::ModerationUnavailable`] when the provider cannot answer
/// and the settings do not fail open.
pub async fn check_image(st: &AppState, user: Uuid, url: &str) -> Result<()> {
    let Some(provider) = &st.moderation else {
        return Ok(());
    };
    let categories = match provider.check_image(url).await {
        Ok(flagged) if flagged.is_empty() => return Ok(()),
        Ok(flagged) => flagged,
        Err(e) if st.cfg.moderation_fail_open => {
            tracing::warn!(error = %e, "image moderation unavailable: allowed (MODERATION_FAILURE=open)");
            return Ok(());
        }
        Err(e) => {
            tracing::warn!(error = %e, "image moderation unavailable");
            return Err(Error::ModerationUnavailable);
        }
    };
    telemetry::count(metric::CONTENT_REFUSED, 1);
    if let Err(e) = rows::count_refusal(&**st.db.get().await?, user).await {
        tracing::warn!(%user, error = %e, "refusal not counted");
    }
    tracing::info!(%user, ?categories, "image refused for its content");
    Err(Error::ContentRefused {
        categories,
        term: None,
    })
}

/// The refusal of `texts`, if any: the blocklist first, then the provider.
async fn refusal(st: &AppState, texts: &[&str]) -> Result<Option<Error>> {
    let terms = terms(st).await?;
    let enforce_all = st.cfg.moderation_blocklist;
    for text in texts {
        if let Some(hit) = blocklist::find(&terms, text, enforce_all) {
            return Ok(Some(Error::ContentRefused {
                categories: vec![hit.category.clone()],
                term: Some(hit.term.clone()),
            }));
        }
    }
    let Some(provider) = &st.moderation else {
        return Ok(None);
    };
    match provider.check(texts).await {
        Ok(flagged) if flagged.is_empty() => Ok(None),
        Ok(categories) => Ok(Some(Error::ContentRefused {
            categories,
            term: None,
        })),
        Err(e) if st.cfg.moderation_fail_open => {
            tracing::warn!(error = %e, "moderation provider unavailable: allowed (MODERATION_FAILURE=open)");
            Ok(None)
        }
        Err(e) => {
            tracing::warn!(error = %e, "moderation provider unavailable: refused with 503");
            Err(Error::ModerationUnavailable)
        }
    }
}

/// The blocklist, read at most once a minute per instance.
async fn terms(st: &AppState) -> Result<std::sync::Arc<Vec<blocklist::Term>>> {
    let cache = st.moderation_terms();
    if let Some((at, terms)) = &*cache.read().await
        && at.elapsed() < TERMS_TTL
    {
        return Ok(terms.clone());
    }
    let rows = rows::terms(&**st.db.get().await?).await?;
    let terms = std::sync::Arc::new(
        rows.into_iter()
            .map(blocklist::Term::from)
            .collect::<Vec<_>>(),
    );
    *cache.write().await = Some((Instant::now(), terms.clone()));
    Ok(terms)
}
