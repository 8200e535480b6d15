//! The generation state machine: the one place where a generation changes
//! status (docs/architecture.md, "Generation lifecycle").
//!
//! `[queued →] pending → processing → completed | failed | cancelled`; terminal
//! states are final (`queued`: a batch item waiting for a slot, [`queue`]).
//! Completion can be reported by the sync wait, the webhook, status polls and
//! the reconciler, concurrently and repeatedly; all of them
//! call [`settle`] with a deadline. A lease, sized from that deadline, decides
//! who copies the output to S3 (its thumbnail is made after the commit), and one transaction
//! (with the row locked) inserts the image, marks `completed` and captures the
//! hold, so a generation completes, and is charged, exactly once.
//!
//! Faults: a transient failure (S3, the database, the network, the deadline)
//! releases the lease and leaves the generation open for the next webhook
//! retry, status poll or reconciler run; only a permanent cause (the provider
//! failed, the output is gone or invalid) or the generation deadline ends it.
//!
//! Domain: may import the other domain modules it drives (`credits`,
//! `moderation`, `uploads`, `thumbnail`, `usage`), the adapters and the
//! platform; never the edge (`api`, `web`).

pub mod queue;

use std::time::{Duration, Instant};

use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::{
    AppState, Error, ErrorCode, Result,
    credits::Hold,
    db::{
        generations::{self, Generation, LeaseBy, NewGeneration, Status},
        holds,
        images::{self, NewImage},
        models::Model,
    },
    replicate::{NewPrediction, Prediction, ReplicateError, inputs, progress},
    telemetry::{self, metric},
    thumbnail, usage,
};

/// Time a lease holder keeps beyond its deadline for the final transaction.
const LEASE_MARGIN: Duration = Duration::from_secs(10);
/// How long past its deadline a create started in time may take to answer.
const THROTTLE_GRACE: Duration = Duration::from_secs(2);
/// Time an external capture call may take (the credit service's timeout and a margin).
const CAPTURE_CALL: Duration = Duration::from_secs(6);
/// Minimum gap between two provider polls of one generation.
const POLL_GAP_MS: i32 = 1000;

/// Whether a provider's failure message is its safety checker's refusal
/// ("All generated images contained NSFW content…", "NSFW content detected").
fn is_safety_refusal(message: &str) -> bool {
    message.to_ascii_lowercase().contains("nsfw")
}

/// A generation that has just been started, with the hold it took.
#[derive(Debug)]
pub struct Started {
    /// The generation as recorded.
    pub generation: Generation,
    /// The credit hold taken for its outputs.
    pub hold: Hold,
}

/// Takes a hold and records the generation (one transaction): before this
/// commits nothing exists; after it, the generation is accepted and ends
/// with an outcome whatever happens to this process.
pub async fn begin(st: &AppState, new: &NewGeneration, model: &Model) -> Result<Hold> {
    let mut conn = st.db.get().await?;
    let tx = crate::db::Tx::begin(&mut conn).await?;
    // The user's quota row, locked to the end of the transaction, serialises their starts:
    // the cap and the hold are decided together, so parallel requests cannot exceed either.
    let free_used = holds::lock_quota(&*tx, new.user_id).await?;
    let (open, retry_after) = generations::in_flight(&*tx, new.user_id).await?;
    if open >= st.cfg.max_in_flight_per_user {
        return Err(Error::TooManyInFlight { open, retry_after });
    }
    let units = new.request.num_outputs;
    let hold = st
        .credits
        .reserve(&*tx, new.user_id, free_used, units)
        .await?;
    if !generations::insert(&*tx, new, hold.charge).await? {
        return Err(Error::IdempotencyKeyTaken);
    }
    st.credits
        .record_hold(&*tx, new.user_id, new.id, &hold)
        .await?;
    tx.commit().await?;
    telemetry::count_for_model(metric::GENERATION_STARTED, &model.name, 1);
    if hold.free_units > 0 {
        telemetry::count(
            metric::FREE_GENERATION_USED,
            hold.free_units.unsigned_abs().into(),
        );
    }
    Ok(hold)
}

/// Creates the Replicate prediction of a generation that [`begin`] recorded,
/// with `source_image` as the provider reads it (the request's URL, or an
/// upload's data URI or presigned URL: `crate::uploads::source`).
/// With `wait`, Replicate is asked to answer only when done (`Prefer: wait`),
/// and a finished prediction is settled before `deadline`. `api_base` is the
/// API's own URL as the request reached it (for the webhook URL when
/// `WEBHOOK_BASE_URL` is not set).
///
/// Only a definite refusal is an error (the generation then failed and its
/// hold was released): [`Error::InputRefused`], [`Error::ProviderBusy`],
/// [`Error::ProviderRefused`]. Anything else (an ambiguous create, a fault
/// while recording or settling) is logged and left to the webhook, status
/// polls and the reconciler: the generation stays open.
pub async fn start(
    st: &AppState,
    new: &NewGeneration,
    model: &Model,
    source_image: Option<&str>,
    api_base: Option<&str>,
    wait: Option<Duration>,
    deadline: Instant,
) -> Result<()> {
    let r = &new.request;
    let params = inputs::Params {
        prompt: &r.prompt,
        negative_prompt: r.negative_prompt.as_deref(),
        width: r.width,
        height: r.height,
        steps: r.steps,
        guidance: r.guidance_scale,
        seed: r.seed,
        source_image,
        strength: r.generation_strength,
        num_outputs: r.num_outputs,
    };
    let input = inputs::build(&model.replicate_id, &params);
    let webhook = st.cfg.webhook_url(new.id, api_base);
    let create = st.replicate.create(NewPrediction {
        model: &model.replicate_id,
        version: model.version.as_deref(),
        input,
        webhook: webhook.as_deref(),
        wait,
        cancel_after: st.cfg.generation_deadline,
        retry_until: deadline,
    });
    // Past the deadline (and the grace a last throttled attempt gets) the answer is lost to
    // us, not necessarily to Replicate: ambiguous.
    let created = tokio::time::timeout_at((deadline + THROTTLE_GRACE).into(), create)
        .await
        .unwrap_or(Err(ReplicateError::Timeout));
    let generation_id = new.id;
    let refusal = match created {
        Ok(prediction) => {
            tracing::info!(%generation_id, prediction_id = %prediction.id, status = %prediction.status, "prediction created");
            let recorded = async {
                let db = st.db.get().await?;
                let status = generations::set_prediction(&**db, generation_id, &prediction.id)
                    .await?
                    .ok_or_else(|| Error::Internal("prediction id recorded twice".into()))?;
                drop(db);
                if matches!(status, Status::Cancelled | Status::Failed) {
                    // Ended (cancelled by its user) while the create was under way: stop the
                    // prediction too, or it runs on, billed, with its free slot already back.
                    stop_prediction(st, generation_id, &prediction.id).await;
                    return Ok(());
                }
                settle(st, generation_id, &prediction, deadline, LeaseBy::Other).await
            };
            if let Err(e) = recorded.await {
                tracing::warn!(%generation_id, error = %e, "prediction not recorded or settled yet; left for a retry");
            }
            return Ok(());
        }
        Err(e) if e.is_ambiguous() => {
            // The prediction may exist anyway (creates are not idempotent): keep the generation
            // open; its webhook or the reconciler will find it, or the reconciler fails it.
            tracing::warn!(%generation_id, error = %e, "prediction create outcome unknown; left to the reconciler");
            return Ok(());
        }
        Err(ReplicateError::Status { status: 422, title }) => {
            tracing::warn!(%generation_id, %title, "prediction input refused");
            (ErrorCode::ProviderRejectedInput, Error::InputRefused)
        }
        Err(e) if e.is_transient() => {
            tracing::warn!(%generation_id, error = %e, "provider busy or unreachable: nothing was created");
            (ErrorCode::ProviderBusy, Error::ProviderBusy)
        }
        Err(e) => {
            tracing::error!(%generation_id, error = %e, "prediction create failed");
            (ErrorCode::ProviderError, Error::ProviderRefused(e))
        }
    };
    let (code, error) = refusal;
    // Nothing was created: the request's Idempotency-Key is freed, so that a retry runs again.
    if let Err(e) = end(st, generation_id, Status::Failed, Some(code), true).await {
        // Still open without a prediction: the reconciler fails it and releases the hold.
        tracing::warn!(%generation_id, error = %e, "refused generation not closed yet");
    }
    Err(error)
}

/// Applies what Replicate reports about a prediction to its generation,
/// working until `deadline` at most; `by` says which path reports it.
pub async fn settle(
    st: &AppState,
    generation_id: Uuid,
    p: &Prediction,
    deadline: Instant,
    by: LeaseBy,
) -> Result<()> {
    let progress = p.logs.as_deref().and_then(progress::latest);
    if progress.is_some() || p.started_at.is_some() {
        let db = st.db.get().await?;
        generations::record_progress(&**db, generation_id, progress, p.started_at).await?;
    }
    if p.is_terminal() {
        usage::record(st, generation_id, p).await?;
    }
    let files = p.output_files();
    match (p.status.as_str(), files.is_empty()) {
        ("succeeded" | "starting" | "processing", false) if p.data_removed => {
            tracing::error!(%generation_id, "provider output already deleted");
            close(
                st,
                generation_id,
                Status::Failed,
                Some(ErrorCode::OutputCopyFailed),
            )
            .await
        }
        ("succeeded", false) => complete(st, generation_id, &files, deadline, by).await,
        ("starting" | "processing", false) => {
            // Outputs shown before the end: complete only once all that were asked are there.
            let asked = load(st, generation_id).await?.request.num_outputs;
            if files.len() < usize::try_from(asked).unwrap_or(1) {
                return Ok(());
            }
            complete(st, generation_id, &files, deadline, by).await
        }
        ("succeeded", true) => {
            close(st, generation_id, Status::Failed, Some(ErrorCode::NoOutput)).await
        }
        ("failed", _) => {
            let msg = p
                .error_message()
                .unwrap_or_else(|| "The generation failed.".into());
            tracing::warn!(%generation_id, provider_error = %msg, "prediction failed");
            // The provider's safety checker: a refusal, never charged, said as such.
            let error = if is_safety_refusal(&msg) {
                telemetry::count(metric::CONTENT_REFUSED, 1);
                ErrorCode::ContentRefused
            } else {
                ErrorCode::GenerationFailed
            };
            close(st, generation_id, Status::Failed, Some(error)).await
        }
        // A user's cancel ends the generation before Replicate's: one still open was stopped
        // by the provider, at our deadline (`Cancel-After`) or for its own reasons.
        ("canceled" | "aborted", _) => {
            let g = load(st, generation_id).await?;
            let past_deadline = chrono::Utc::now() - g.created_at
                >= chrono::TimeDelta::from_std(st.cfg.generation_deadline).unwrap_or_default();
            let error = if past_deadline {
                ErrorCode::Timeout
            } else {
                ErrorCode::GenerationFailed
            };
            tracing::warn!(%generation_id, provider_status = %p.status, code = %error, "prediction stopped by the provider");
            close(st, generation_id, Status::Failed, Some(error)).await
        }
        _ => Ok(()),
    }
}

/// Copies the outputs and completes the generation, exactly once (thumbnails
/// are made afterwards: [`thumbnail::for_object`]). An output that cannot be
/// stored, ever, is left out and not charged; when none can, the generation
/// fails. Returns [`Error::CompletionInProgress`] while another holder's lease
/// is live, and a transient error (with the lease released) when a copy or the
/// commit could not be done now.
async fn complete(
    st: &AppState,
    generation_id: Uuid,
    files: &[&str],
    deadline: Instant,
    by: LeaseBy,
) -> Result<()> {
    let owner = Uuid::new_v4();
    let lease = deadline.saturating_duration_since(Instant::now()) + LEASE_MARGIN;
    let db = st.db.get().await?;
    let leased = generations::try_lease(&**db, generation_id, owner, lease, by).await?;
    let g = generations::get(&**db, generation_id)
        .await?
        .ok_or(Error::NotFound(crate::Resource::Generation))?;
    drop(db); // not held during the copy: the pool is small
    if !leased {
        return match g.status.is_terminal() {
            true => Ok(()),
            false => Err(Error::CompletionInProgress),
        };
    }
    let copy = copy_outputs(st, &g, files);
    let copied = match tokio::time::timeout_at(deadline.into(), copy).await {
        Ok(copied) => copied,
        Err(_) => Err(Error::TimedOut("output copy")),
    };
    let outcome = match copied {
        Ok(_) if !generations::holds_lease(&**st.db.get().await?, generation_id, owner).await? => {
            // A webhook took the lease over meanwhile: it commits.
            return Err(Error::CompletionInProgress);
        }
        Ok(copied) if copied.images.is_empty() => {
            // Nothing to store: refused by moderation, or none could be stored.
            let error = match copied.refused {
                0 => ErrorCode::OutputCopyFailed,
                _ => ErrorCode::ContentRefused,
            };
            close(st, generation_id, Status::Failed, Some(error)).await
        }
        Ok(Copied { images: stored, .. }) => {
            let keys: Vec<String> = stored.iter().map(|i| i.storage_key.clone()).collect();
            let committed = commit(st, &g, stored, deadline).await;
            // Thumbnails are made apart from the answer: by the `thumbnails` function on
            // the bucket's notification, or here by tasks of this process.
            if committed.is_ok() && !st.cfg.thumbnails_by_event {
                for key in keys {
                    thumbnail::spawn_for_object(st, key);
                }
            }
            committed
        }
        Err(e) => Err(e),
    };
    if let Err(e) = &outcome {
        tracing::warn!(%generation_id, error = %e, "completion not done; left open for a retry");
        release_lease(st, generation_id, owner).await;
    }
    outcome
}

/// What [`copy_outputs`] stored, and how many outputs moderation refused.
struct Copied {
    images: Vec<NewImage>,
    refused: usize,
}

/// Stores the generation's outputs (at most the number asked), one at a time
/// (a download's memory at once). An output of a model whose outputs are
/// moderated is checked first: a flagged one is never stored. An output that
/// cannot be stored, ever, or that was flagged is logged and left out (not
/// charged); any transient failure (moderation included) is the error, with
/// what this attempt stored deleted (a retry copies every output again, to
/// the same keys).
async fn copy_outputs(st: &AppState, g: &Generation, files: &[&str]) -> Result<Copied> {
    let asked = usize::try_from(g.request.num_outputs).unwrap_or(1);
    let moderated = st
        .models()
        .await?
        .iter()
        .any(|m| m.id == g.model_id && m.moderate_outputs);
    let mut copied = Copied {
        images: Vec::with_capacity(asked),
        refused: 0,
    };
    for (index, file) in (0..).zip(files.iter().take(asked)) {
        let stored = async {
            if moderated {
                crate::moderation::check_image(st, g.user_id, file).await?;
            }
            Ok::<_, Error>(st.storage.copy_output(file, g.user_id, g.id, index).await?)
        };
        match stored.await {
            Ok(o) => copied.images.push(NewImage {
                generation_id: g.id,
                user_id: g.user_id,
                output_index: index,
                storage_key: o.key,
                format: o.format,
                file_size: o.size,
                width: o.width,
                height: o.height,
                thumbnail: None,
            }),
            Err(Error::ContentRefused { categories, .. }) => {
                tracing::warn!(generation_id = %g.id, output = index, ?categories, "output refused by moderation; not stored, not charged");
                copied.refused += 1;
            }
            Err(e) if !e.is_transient() => {
                tracing::error!(generation_id = %g.id, output = index, error = %e, "output cannot be stored; not charged");
            }
            Err(e) => {
                // A retry copies them again; should none come, they must not outlive the generation.
                for key in copied.images.iter().map(|i| &i.storage_key) {
                    if let Err(e) = st.storage.delete(key).await {
                        tracing::warn!(generation_id = %g.id, %key, error = %e, "partial copy not deleted");
                    }
                }
                return Err(e);
            }
        }
    }
    Ok(copied)
}

/// Gives the lease up at once, so that the next webhook retry, poll or
/// reconciler run need not wait for it to expire.
async fn release_lease(st: &AppState, generation_id: Uuid, owner: Uuid) {
    let released =
        async { generations::release_lease(&**st.db.get().await?, generation_id, owner).await };
    if let Err(e) = released.await {
        tracing::warn!(%generation_id, error = %e, "lease not released; it expires by itself");
    }
}

/// The completing transaction: the image rows, the capture of what was
/// delivered and `completed`, or nothing if the generation ended meanwhile
/// (then the copies are deleted).
async fn commit(
    st: &AppState,
    g: &Generation,
    stored: Vec<NewImage>,
    deadline: Instant,
) -> Result<()> {
    let generation_id = g.id;
    let mut conn = st.db.get().await?;
    let tx = crate::db::Tx::begin(&mut conn).await?;
    let current = lock(&tx, generation_id).await?;
    if current.status.is_terminal() {
        drop(tx);
        drop(conn);
        if current.status != Status::Completed {
            // Cancelled while we copied: the images must not outlive it (the audit lists them if this fails).
            for key in stored.iter().map(|i| &i.storage_key) {
                if let Err(e) = st.storage.delete(key).await {
                    tracing::warn!(%generation_id, %key, error = %e, "copy of an ended generation not deleted");
                }
            }
        }
        return Ok(());
    }
    for image in &stored {
        images::insert(&*tx, image).await?;
    }
    let delivered = i32::try_from(stored.len()).unwrap_or(i32::MAX);
    let charged = st.credits.capture(&*tx, generation_id, delivered).await?;
    let model = generations::finish(&*tx, generation_id, Status::Completed, charged, None).await?;
    tx.commit().await?;
    drop(conn);
    tracing::info!(%generation_id, user_id = %g.user_id, delivered, credits = charged, "generation completed");
    telemetry::count_for_model(metric::GENERATION_SUCCEEDED, &model, 1);
    telemetry::generation_time(&model, (chrono::Utc::now() - g.created_at).as_seconds_f64());
    telemetry::count(metric::CREDITS_CAPTURED, charged.unsigned_abs().into());
    let time_left = deadline.saturating_duration_since(Instant::now());
    if charged > 0 && time_left > CAPTURE_CALL {
        // An external provider is charged after the commit (else by the reconciler);
        // a failure stays recorded for a retry.
        let sent = async {
            st.credits
                .settle_capture(&**st.db.get().await?, generation_id)
                .await
        };
        if let Err(e) = sent.await {
            tracing::warn!(%generation_id, error = %e, "capture not sent yet; the reconciler retries it");
        }
    }
    Ok(())
}

/// Ends an open generation as failed or cancelled and releases its hold; a
/// generation that already ended is left as it is.
pub(crate) async fn close(
    st: &AppState,
    generation_id: Uuid,
    status: Status,
    error: Option<ErrorCode>,
) -> Result<()> {
    end(st, generation_id, status, error, false).await
}

/// [`close`], also freeing the generation's idempotency key when `free_key`.
async fn end(
    st: &AppState,
    generation_id: Uuid,
    status: Status,
    error: Option<ErrorCode>,
    free_key: bool,
) -> Result<()> {
    let mut conn = st.db.get().await?;
    let tx = crate::db::Tx::begin(&mut conn).await?;
    if lock(&tx, generation_id).await?.status.is_terminal() {
        return Ok(());
    }
    st.credits.release(&*tx, generation_id).await?;
    let model = generations::finish(&*tx, generation_id, status, 0, error).await?;
    if free_key {
        generations::forget_key(&*tx, generation_id).await?;
    }
    tx.commit().await?;
    tracing::info!(%generation_id, status = status.as_str(), "generation closed");
    let closed = if status == Status::Cancelled {
        metric::GENERATION_CANCELLED
    } else {
        metric::GENERATION_FAILED
    };
    telemetry::count_for_model(closed, &model, 1);
    Ok(())
}

/// Locks the generation's row for the rest of `tx` and returns it.
async fn lock(tx: &crate::db::Tx<'_>, generation_id: Uuid) -> Result<Generation> {
    generations::lock(&**tx, generation_id)
        .await?
        .ok_or(Error::NotFound(crate::Resource::Generation))
}

/// Cancels a user's open generation: `cancelled` and the hold released, then Replicate's cancel.
pub async fn cancel(st: &AppState, g: &Generation) -> Result<()> {
    if g.status.is_terminal() {
        return Err(Error::NotCancellable(g.status));
    }
    // Ours first, so that the provider's `canceled` finds it ended by the user.
    close(st, g.id, Status::Cancelled, None).await?;
    // Read again: a create under way may have recorded its prediction meanwhile (one
    // recorded after the close is stopped by `start`).
    if let Some(pid) = load(st, g.id).await?.prediction_id {
        stop_prediction(st, g.id, &pid).await;
    }
    Ok(())
}

/// Cancels the prediction of an ended generation at Replicate, recording what it used.
async fn stop_prediction(st: &AppState, generation_id: Uuid, prediction_id: &str) {
    match st.replicate.cancel(prediction_id).await {
        // What it used until then is billed (run-time models): recorded now, as the
        // webhook would.
        Ok(p) if p.is_terminal() => {
            if let Err(e) = usage::record(st, generation_id, &p).await {
                tracing::warn!(%generation_id, error = %e, "cancelled prediction's usage not recorded");
            }
        }
        Ok(_) => {}
        // We stop charging and listening either way; a late result changes nothing.
        Err(e) => tracing::warn!(%generation_id, error = %e, "provider cancel failed"),
    }
}

/// Asks Replicate about an open generation (at most once a second) and
/// settles it, within `deadline`. When the provider cannot be asked (a
/// timeout, a 5xx, or a refusal: 404 for a prediction it no longer knows,
/// 401/403 for our token) the reason is logged and counted and the
/// generation left as it is: the caller reports the state it has, and the
/// reconciler decides its fate. A transient failure to settle does the same.
pub async fn poll(st: &AppState, g: &Generation, deadline: Instant) -> Result<()> {
    let Some(pid) = g
        .prediction_id
        .as_deref()
        .filter(|_| !g.status.is_terminal())
    else {
        return Ok(());
    };
    let polled = async {
        if !generations::claim_poll(&**st.db.get().await?, g.id, POLL_GAP_MS).await? {
            return Ok(());
        }
        let asked = tokio::time::timeout_at(deadline.into(), st.replicate.get(pid)).await;
        let p = match asked {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                provider_unreadable(g.id, &e);
                return Ok(());
            }
            Err(_) => {
                provider_unreadable(g.id, &ReplicateError::Timeout);
                return Ok(());
            }
        };
        settle(st, g.id, &p, deadline, LeaseBy::Poll).await
    };
    match polled.await {
        Err(e) if e.is_transient() => {
            tracing::warn!(generation_id = %g.id, error = %e, "poll did not settle the generation; left for a retry");
            Ok(())
        }
        other => other,
    }
}

/// Logs and counts why the provider could not tell a generation's state.
pub(crate) fn provider_unreadable(generation_id: Uuid, e: &ReplicateError) {
    if e.is_auth_failure() {
        tracing::error!(%generation_id, error = %e, "Replicate refused our token: check REPLICATE_API_TOKEN");
        telemetry::count(metric::PROVIDER_AUTH_FAILED, 1);
    } else {
        tracing::warn!(%generation_id, error = %e, "provider could not be asked; the stored state stands");
    }
    telemetry::count(metric::PROVIDER_POLL_FAILED, 1);
}

/// Polls with backoff until the generation ends or `deadline` passes; returns its latest state.
pub async fn wait_until(
    st: &AppState,
    generation_id: Uuid,
    deadline: Instant,
) -> Result<Generation> {
    let mut gap = Duration::from_millis(250);
    loop {
        let g = load(st, generation_id).await?;
        let left = deadline.saturating_duration_since(Instant::now());
        if g.status.is_terminal() || left.is_zero() {
            return Ok(g);
        }
        tokio::time::sleep(gap.min(left)).await;
        gap = (gap * 2).min(Duration::from_secs(2));
        poll(st, &g, deadline).await?;
    }
}

/// Waits (reading the row, every 200 ms) until the generation has ended or
/// `until` passes; returns whether it ended. For a caller that found another
/// completion under way and would rather report its outcome than ask for a retry.
pub async fn wait_for_end(st: &AppState, generation_id: Uuid, until: Instant) -> Result<bool> {
    loop {
        if load(st, generation_id).await?.status.is_terminal() {
            return Ok(true);
        }
        if Instant::now() >= until {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(200).min(until - Instant::now())).await;
    }
}

/// The generation as stored now.
pub async fn load(st: &AppState, generation_id: Uuid) -> Result<Generation> {
    generations::get(&**st.db.get().await?, generation_id)
        .await?
        .ok_or(Error::NotFound(crate::Resource::Generation))
}

/// Finds the generation a webhook is about: by prediction id, else by the
/// `generationId` the webhook URL carries (the webhook can beat the create response).
pub async fn find_for_prediction(
    db: &impl GenericClient,
    prediction_id: &str,
    hint: Option<Uuid>,
) -> Result<Option<Generation>> {
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
