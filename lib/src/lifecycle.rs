//! The generation state machine (DESIGN §3): the one place where a generation
//! changes status.
//!
//! `pending → processing → completed | failed | cancelled`; terminal states
//! are final. Completion can be reported by the sync wait, the webhook and
//! status polls, concurrently and repeatedly; all of them call [`settle`].
//! A short lease decides who copies the output to S3, and one transaction
//! (with the row locked) inserts the image, marks `completed` and captures the
//! hold, so a generation completes, and is charged, exactly once.

use std::time::{Duration, Instant};

use http::StatusCode;

use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::{
    AppState, Problem,
    credits::{Charge, Hold},
    db::{
        generations::{self, Generation, NewGeneration, Status},
        images::{self, NewImage},
        models::Model,
    },
    replicate::{Prediction, ReplicateError, inputs},
    telemetry::{self, metric},
};

/// How long a completion lease lasts: longer than any copy, short enough to recover from a crash.
const LEASE_SECS: i32 = 120;
/// Minimum gap between two provider polls of one generation.
const POLL_GAP_MS: i32 = 1000;

/// The error recorded when Replicate could not start a generation.
pub(crate) const PROVIDER_ERROR: (&str, &str) = (
    "PROVIDER_ERROR",
    "The image provider could not start this generation.",
);

/// The error recorded when Replicate refused the model version or input (422).
pub const INPUT_REFUSED: (&str, &str) = (
    "PROVIDER_REJECTED_INPUT",
    "The image provider refused this model version or input.",
);

/// A generation that has just been started, with the hold it took.
#[derive(Debug)]
pub struct Started {
    pub generation: Generation,
    pub hold: Hold,
}

/// Takes a hold, records the generation and creates its Replicate prediction.
/// With `wait`, Replicate is asked to answer only when done (`Prefer: wait`),
/// and a finished prediction is settled before returning.
pub async fn start(
    st: &AppState,
    new: NewGeneration,
    model: &Model,
    wait: Option<Duration>,
) -> Result<Started, Problem> {
    let hold = {
        let mut conn = st.db.get().await.map_err(crate::Error::from)?;
        let tx = conn.transaction().await.map_err(crate::Error::from)?;
        let hold = st.credits.reserve(&*tx, new.user_id).await??;
        generations::insert(&*tx, &new, hold.charge.as_str()).await?;
        st.credits
            .record_hold(&*tx, new.user_id, new.id, &hold)
            .await?;
        tx.commit().await.map_err(crate::Error::from)?;
        telemetry::count(metric::GENERATION_STARTED, 1);
        if hold.charge == Charge::Free {
            telemetry::count(metric::FREE_GENERATION_USED, 1);
        }
        hold
    };

    let params = inputs::Params {
        prompt: &new.prompt,
        negative_prompt: new.negative_prompt.as_deref(),
        width: new.width,
        height: new.height,
        steps: new.steps,
        guidance: new.guidance_scale,
        seed: new.seed,
        source_image: new.source_image_url.as_deref(),
        strength: new.generation_strength,
    };
    let input = inputs::build(&model.replicate_id, &params);
    let webhook = st.cfg.webhook_url(new.id);
    let created = st
        .replicate
        .create(
            &model.replicate_id,
            model.version.as_deref(),
            input,
            webhook.as_deref(),
            wait,
        )
        .await;
    match created {
        Ok(prediction) => {
            generations::set_prediction(
                &**st.db.get().await.map_err(crate::Error::from)?,
                new.id,
                &prediction.id,
            )
            .await?;
            tracing::info!(generation_id = %new.id, prediction_id = %prediction.id, status = %prediction.status, "prediction created");
            settle(st, new.id, &prediction).await?;
        }
        Err(e) if e.is_ambiguous() => {
            // The prediction may exist anyway (creates are not idempotent): keep the generation
            // open; its webhook or the reconciler will find it, or the reconciler fails it.
            tracing::warn!(generation_id = %new.id, error = %e, "prediction create outcome unknown; left to the reconciler");
        }
        Err(ReplicateError::Status { status: 422, title }) => {
            tracing::warn!(generation_id = %new.id, %title, "prediction input refused");
            close(st, new.id, Status::Failed, Some(INPUT_REFUSED)).await?;
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                INPUT_REFUSED.0,
                "Input refused",
                INPUT_REFUSED.1,
            ));
        }
        Err(e) => {
            tracing::error!(generation_id = %new.id, error = %e, "prediction create failed");
            close(st, new.id, Status::Failed, Some(PROVIDER_ERROR)).await?;
            return Err(Problem::provider_error(PROVIDER_ERROR.1));
        }
    }
    let generation = load(st, new.id).await?;
    Ok(Started { generation, hold })
}

/// Applies what Replicate reports about a prediction to its generation.
pub async fn settle(st: &AppState, generation_id: Uuid, p: &Prediction) -> Result<(), Problem> {
    match (p.status.as_str(), p.output_file()) {
        ("succeeded" | "starting" | "processing", Some(file)) => {
            complete(st, generation_id, file).await
        }
        ("succeeded", None) => {
            close(
                st,
                generation_id,
                Status::Failed,
                Some(("NO_OUTPUT", "The provider returned no image.")),
            )
            .await
        }
        ("failed" | "aborted", _) => {
            let msg = p
                .error_message()
                .unwrap_or_else(|| "The generation failed.".into());
            tracing::warn!(%generation_id, provider_error = %msg, "prediction failed");
            close(
                st,
                generation_id,
                Status::Failed,
                Some((
                    "GENERATION_FAILED",
                    "The image provider could not generate this image.",
                )),
            )
            .await
        }
        ("canceled", _) => close(st, generation_id, Status::Cancelled, None).await,
        _ => Ok(()),
    }
}

/// Copies the output and completes the generation, exactly once.
async fn complete(st: &AppState, generation_id: Uuid, file: &str) -> Result<(), Problem> {
    let owner = Uuid::new_v4();
    let db = st.db.get().await.map_err(crate::Error::from)?;
    if !generations::try_lease(&**db, generation_id, owner, LEASE_SECS).await? {
        return Ok(()); // finished already, or someone else is copying right now
    }
    let user_id = generations::get(&**db, generation_id)
        .await?
        .ok_or_else(|| not_found(generation_id))?
        .user_id;
    drop(db); // not held during the copy: the pool is small
    let stored = match st.storage.copy_output(file, user_id, generation_id).await {
        Ok(obj) => obj,
        Err(e) => {
            tracing::error!(%generation_id, error = %e, "output copy failed");
            return close(
                st,
                generation_id,
                Status::Failed,
                Some((
                    "OUTPUT_COPY_FAILED",
                    "The generated image could not be stored.",
                )),
            )
            .await;
        }
    };

    let mut conn = st.db.get().await.map_err(crate::Error::from)?;
    let tx = conn.transaction().await.map_err(crate::Error::from)?;
    let current = generations::lock(&*tx, generation_id)
        .await?
        .ok_or_else(|| not_found(generation_id))?;
    if current.status.is_terminal() {
        drop(tx);
        if current.status != Status::Completed {
            // Cancelled while we copied: the image must not outlive it.
            st.storage.delete(&stored.key).await?;
        }
        return Ok(());
    }
    let image = NewImage {
        generation_id,
        user_id,
        storage_key: stored.key,
        format: stored.format,
        file_size: stored.size,
        width: stored.width,
        height: stored.height,
    };
    images::insert(&*tx, &image).await?;
    let charged = st.credits.capture(&*tx, generation_id).await?;
    generations::finish(&*tx, generation_id, Status::Completed, charged, None).await?;
    tx.commit().await.map_err(crate::Error::from)?;
    drop(conn);
    tracing::info!(%generation_id, %user_id, credits = charged, "generation completed");
    telemetry::count(metric::GENERATION_SUCCEEDED, 1);
    telemetry::count(metric::CREDITS_CAPTURED, charged.unsigned_abs().into());
    if charged > 0 {
        // An external provider is charged after the commit; a failure stays recorded for a retry.
        let db = st.db.get().await.map_err(crate::Error::from)?;
        st.credits.settle_capture(&**db, generation_id).await?;
    }
    Ok(())
}

/// Ends an open generation as failed or cancelled and releases its hold; a
/// generation that already ended is left as it is.
pub(crate) async fn close(
    st: &AppState,
    generation_id: Uuid,
    status: Status,
    error: Option<(&str, &str)>,
) -> Result<(), Problem> {
    let mut conn = st.db.get().await.map_err(crate::Error::from)?;
    let tx = conn.transaction().await.map_err(crate::Error::from)?;
    let Some(current) = generations::lock(&*tx, generation_id).await? else {
        return Err(not_found(generation_id));
    };
    if current.status.is_terminal() {
        return Ok(());
    }
    st.credits.release(&*tx, generation_id).await?;
    generations::finish(&*tx, generation_id, status, 0, error).await?;
    tx.commit().await.map_err(crate::Error::from)?;
    tracing::info!(%generation_id, status = status.as_str(), "generation closed");
    let closed = if status == Status::Cancelled {
        metric::GENERATION_CANCELLED
    } else {
        metric::GENERATION_FAILED
    };
    telemetry::count(closed, 1);
    Ok(())
}

/// Cancels a user's open generation: Replicate's cancel, then `cancelled` and the hold released.
pub async fn cancel(st: &AppState, g: &Generation) -> Result<(), Problem> {
    if g.status.is_terminal() {
        return Err(Problem::conflict(
            "GENERATION_NOT_CANCELLABLE",
            format!("The generation is already {}.", g.status.as_str()),
        ));
    }
    if let Some(pid) = &g.prediction_id {
        if let Err(e) = st.replicate.cancel(pid).await {
            // We stop charging and listening either way; a late result changes nothing.
            tracing::warn!(generation_id = %g.id, error = %e, "provider cancel failed");
        }
    }
    close(st, g.id, Status::Cancelled, None).await
}

/// Asks Replicate about an open generation (at most once a second) and settles it.
pub async fn poll(st: &AppState, g: &Generation) -> Result<(), Problem> {
    let Some(pid) = g
        .prediction_id
        .as_deref()
        .filter(|_| !g.status.is_terminal())
    else {
        return Ok(());
    };
    if !generations::claim_poll(
        &**st.db.get().await.map_err(crate::Error::from)?,
        g.id,
        POLL_GAP_MS,
    )
    .await?
    {
        return Ok(());
    }
    match st.replicate.get(pid).await {
        Ok(p) => settle(st, g.id, &p).await,
        Err(e) => {
            tracing::warn!(generation_id = %g.id, error = %e, "provider poll failed");
            Ok(())
        }
    }
}

/// Polls with backoff until the generation ends or `deadline` passes; returns its latest state.
pub async fn wait_until(
    st: &AppState,
    generation_id: Uuid,
    deadline: Instant,
) -> Result<Generation, Problem> {
    let mut gap = Duration::from_millis(250);
    loop {
        let g = load(st, generation_id).await?;
        let left = deadline.saturating_duration_since(Instant::now());
        if g.status.is_terminal() || left.is_zero() {
            return Ok(g);
        }
        tokio::time::sleep(gap.min(left)).await;
        gap = (gap * 2).min(Duration::from_secs(2));
        poll(st, &g).await?;
    }
}

/// The generation as stored now.
pub async fn load(st: &AppState, generation_id: Uuid) -> Result<Generation, Problem> {
    let db = st.db.get().await.map_err(crate::Error::from)?;
    generations::get(&**db, generation_id)
        .await?
        .ok_or_else(|| not_found(generation_id))
}

fn not_found(generation_id: Uuid) -> Problem {
    tracing::warn!(%generation_id, "generation vanished");
    Problem::not_found("GENERATION_NOT_FOUND", "Generation")
}

/// Finds the generation a webhook is about: by prediction id, else by the
/// `generationId` the webhook URL carries (the webhook can beat the create response).
pub async fn find_for_prediction(
    db: &impl GenericClient,
    prediction_id: &str,
    hint: Option<Uuid>,
) -> crate::Result<Option<Generation>> {
    if let Some(g) = generations::get_by_prediction(db, prediction_id).await? {
        return Ok(Some(g));
    }
    let Some(id) = hint else { return Ok(None) };
    Ok(generations::get(db, id).await?.filter(|g| {
        g.prediction_id
            .as_deref()
            .is_none_or(|p| p == prediction_id)
    }))
}
