//! Generations (`generations` table): one row per request (of 1 to 4 images), from
//! `pending` (or `queued`, a batch item waiting for a slot) to a terminal status. State changes go through
//! [`crate::lifecycle`]; this module only reads and writes rows.

use super::Sql;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Row;
use uuid::Uuid;

use super::holds::Charge;
use crate::{Error, Result};

/// Where a generation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// A batch item waiting for a slot: held, not sent to the provider yet.
    Queued,
    /// Held; its prediction not created (or its create not answered) yet.
    Pending,
    /// Its prediction is recorded (`prediction_id`): the provider runs it; outputs not stored yet.
    Processing,
    /// Its outputs are stored (an image row each) and its hold captured for those delivered.
    Completed,
    /// Ended without a stored output (`error_code` says why); its hold released.
    Failed,
    /// Cancelled by its user (itself, its batch or the account's deletion); its hold released.
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Pending => "pending",
            Status::Processing => "processing",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    /// The status named `s`, if it is one.
    pub fn from_name(s: &str) -> Option<Status> {
        match s {
            "queued" => Some(Status::Queued),
            "pending" => Some(Status::Pending),
            "processing" => Some(Status::Processing),
            "completed" => Some(Status::Completed),
            "failed" => Some(Status::Failed),
            "cancelled" => Some(Status::Cancelled),
            _ => None,
        }
    }

    /// The status stored as `s`; an unknown value is an error, never a guess.
    fn parse(s: &str) -> Result<Status> {
        Status::from_name(s).ok_or_else(|| Error::Internal(format!("unknown status {s:?}")))
    }

    /// Completed, failed and cancelled are final.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Completed | Status::Failed | Status::Cancelled)
    }
}

/// What the caller asked for (validated, the model's defaults applied), as
/// stored with the generation.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationRequest {
    /// The prompt sent: the caller's, `, {style}` appended if given; emptied on account deletion.
    pub prompt: String,
    /// What the image should not show; `None` when not given (or empty).
    pub negative_prompt: Option<String>,
    /// Width in pixels (else the model's default); aspect-ratio models render the nearest ratio.
    pub width: i32,
    /// Height in pixels (else the model's default); aspect-ratio models render the nearest ratio.
    pub height: i32,
    /// Inference steps (else the model's default), at most the model's `max_steps`.
    pub steps: i32,
    /// How closely to follow the prompt, 0 to 30 (else the model's default).
    pub guidance_scale: f64,
    /// The seed asked for (0 to 2³²−1); `None`: the provider picks one.
    pub seed: Option<i64>,
    /// The caller's `sourceImageUrl` (https, SSRF-checked); `None` with an upload or no source.
    pub source_image_url: Option<String>,
    /// The caller's upload used as the source image (`sourceImageId`).
    pub source_upload_id: Option<Uuid>,
    /// Image-to-image strength, 0 to 1, mapped per family (`replicate::inputs`); `None`: default.
    pub generation_strength: Option<f64>,
    /// The caller's `style` as given (appended to `prompt` when not blank).
    pub style: Option<String>,
    /// Outputs asked for (1 to the model's `max_outputs`).
    pub num_outputs: i32,
}

impl GenerationRequest {
    fn from_row(r: &Row) -> Self {
        GenerationRequest {
            prompt: r.get("prompt"),
            negative_prompt: r.get("negative_prompt"),
            width: r.get("width"),
            height: r.get("height"),
            steps: r.get("steps"),
            guidance_scale: r.get("guidance_scale"),
            seed: r.get("seed"),
            source_image_url: r.get("source_image_url"),
            source_upload_id: r.get("source_upload_id"),
            generation_strength: r.get("generation_strength"),
            style: r.get("style"),
            num_outputs: r.get("num_outputs"),
        }
    }
}

/// A generation row.
#[derive(Debug, Clone)]
pub struct Generation {
    /// The generation's id (`generationId`; also the stem of its images' object keys).
    pub id: Uuid,
    /// Its owner.
    pub user_id: Uuid,
    /// The catalog model it runs.
    pub model_id: Uuid,
    /// What was asked for, the model's defaults applied.
    pub request: GenerationRequest,
    /// Where it is in its life.
    pub status: Status,
    /// Replicate's prediction id once its create answered (unique); `None` while queued or pending.
    pub prediction_id: Option<String>,
    /// Why it failed, an [`crate::ErrorCode`] (`TIMEOUT`, `NO_OUTPUT`, …); `None` unless failed.
    pub error_code: Option<String>,
    /// The message shown with `error_code`.
    pub error_message: Option<String>,
    /// How it is paid for, decided when its hold was taken.
    pub charge: Charge,
    /// Credits charged at completion, for the outputs delivered only; 0 otherwise.
    pub credits_used: i32,
    /// The batch it is an item (or a retry of an item) of.
    pub batch_id: Option<Uuid>,
    /// The caller's `Idempotency-Key` and the SHA-256 of the request body, if given.
    pub idempotency_key: Option<String>,
    /// The SHA-256 (hex) of the body sent with `idempotency_key` (another body is refused).
    pub request_hash: Option<String>,
    /// The provider's progress, 0 to 1 (`None` until known; 1 once completed).
    pub progress: Option<f32>,
    /// When the provider began running it.
    pub started_at: Option<DateTime<Utc>>,
    /// When a status poll last asked the provider (polls within a second after it do not).
    pub last_polled_at: Option<DateTime<Utc>>,
    /// When it was recorded, or a batch item left `queued` (its deadline counts from it).
    pub created_at: DateTime<Utc>,
    /// When it reached its terminal status (completed, failed or cancelled); `None` while open.
    pub completed_at: Option<DateTime<Utc>>,
}

impl Generation {
    /// The row as a generation; an unknown status or charge is an error.
    pub(crate) fn from_row(r: &Row) -> Result<Self> {
        Ok(Generation {
            id: r.get("id"),
            user_id: r.get("user_id"),
            model_id: r.get("model_id"),
            request: GenerationRequest::from_row(r),
            status: Status::parse(r.get("status"))?,
            prediction_id: r.get("prediction_id"),
            error_code: r.get("error_code"),
            error_message: r.get("error_message"),
            charge: Charge::parse(r.get("charge"))?,
            credits_used: r.get("credits_used"),
            batch_id: r.get("batch_id"),
            idempotency_key: r.get("idempotency_key"),
            request_hash: r.get("request_hash"),
            progress: r.get("progress"),
            started_at: r.get("started_at"),
            last_polled_at: r.get("last_polled_at"),
            created_at: r.get("created_at"),
            completed_at: r.get("completed_at"),
        })
    }
}

/// A generation about to be recorded.
#[derive(Debug, Clone)]
pub struct NewGeneration {
    /// The id to record it under (new).
    pub id: Uuid,
    /// Its owner.
    pub user_id: Uuid,
    /// The catalog model to run.
    pub model_id: Uuid,
    /// What was asked for, the model's defaults applied.
    pub request: GenerationRequest,
    /// The request's `Idempotency-Key` and body hash: a retry with the key finds this generation.
    pub idempotency: Option<RequestKey>,
    /// The batch it is an item of: then it is recorded `queued`, for a slot to start it.
    pub batch_id: Option<Uuid>,
}

/// An `Idempotency-Key` and the SHA-256 (hex) of the body it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestKey {
    /// The caller's `Idempotency-Key`.
    pub key: String,
    /// The SHA-256 (hex) of the request body it came with.
    pub hash: String,
}

/// Inserts a `pending` generation (a batch item: `queued`) with its charge kind. Returns false (and
/// inserts nothing) when the user already has a generation with its idempotency key.
pub async fn insert(db: &impl Sql, g: &NewGeneration, charge: Charge) -> Result<bool> {
    let (key, hash) = g
        .idempotency
        .as_ref()
        .map(|k| (k.key.as_str(), k.hash.as_str()))
        .unzip();
    let r = &g.request;
    let n = db.execute(
        "INSERT INTO generations (id, user_id, model_id, prompt, negative_prompt, width, height, steps,
                                  guidance_scale, seed, source_image_url, generation_strength, style, charge,
                                  idempotency_key, request_hash, source_upload_id, num_outputs, batch_id,
                                  status)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
                 CASE WHEN $19::uuid IS NULL THEN 'pending' ELSE 'queued' END)
         ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
        &[
            &g.id,
            &g.user_id,
            &g.model_id,
            &r.prompt,
            &r.negative_prompt,
            &r.width,
            &r.height,
            &r.steps,
            &r.guidance_scale,
            &r.seed,
            &r.source_image_url,
            &r.generation_strength,
            &r.style,
            &charge.as_str(),
            &key,
            &hash,
            &r.source_upload_id,
            &r.num_outputs,
            &g.batch_id,
        ],
    )
    .await?;
    Ok(n == 1)
}

/// The user's generation recorded with an idempotency key.
pub async fn get_by_key(db: &impl Sql, user_id: Uuid, key: &str) -> Result<Option<Generation>> {
    db.query_opt(
        "SELECT * FROM generations WHERE user_id = $1 AND idempotency_key = $2",
        &[&user_id, &key],
    )
    .await?
    .as_ref()
    .map(Generation::from_row)
    .transpose()
}

/// A generation by id, whoever owns it.
pub async fn get(db: &impl Sql, id: Uuid) -> Result<Option<Generation>> {
    db.query_opt("SELECT * FROM generations WHERE id = $1", &[&id])
        .await?
        .as_ref()
        .map(Generation::from_row)
        .transpose()
}

/// A generation by id, only if `user_id` owns it.
pub async fn get_owned(db: &impl Sql, id: Uuid, user_id: Uuid) -> Result<Option<Generation>> {
    db.query_opt(
        "SELECT * FROM generations WHERE id = $1 AND user_id = $2",
        &[&id, &user_id],
    )
    .await?
    .as_ref()
    .map(Generation::from_row)
    .transpose()
}

/// The generation a Replicate prediction belongs to.
pub async fn get_by_prediction(db: &impl Sql, prediction_id: &str) -> Result<Option<Generation>> {
    db.query_opt(
        "SELECT * FROM generations WHERE prediction_id = $1",
        &[&prediction_id],
    )
    .await?
    .as_ref()
    .map(Generation::from_row)
    .transpose()
}

/// Locks the row for the rest of the transaction and returns it.
pub async fn lock(db: &impl Sql, id: Uuid) -> Result<Option<Generation>> {
    db.query_opt("SELECT * FROM generations WHERE id = $1 FOR UPDATE", &[&id])
        .await?
        .as_ref()
        .map(Generation::from_row)
        .transpose()
}

/// Records the prediction id; a `pending` generation becomes `processing`
/// (one that already finished, e.g. through an early webhook or a cancel,
/// keeps its status). Returns the status after the update, or `None` when
/// the prediction is already recorded for another generation (so it is not
/// this one's).
pub async fn set_prediction(
    db: &impl Sql,
    id: Uuid,
    prediction_id: &str,
) -> Result<Option<Status>> {
    let updated = db
        .query_opt(
            "UPDATE generations
                SET prediction_id = $2,
                    status = CASE WHEN status = 'pending' THEN 'processing' ELSE status END,
                    updated_at = now()
              WHERE id = $1
          RETURNING status",
            &[&id, &prediction_id],
        )
        .await;
    match updated {
        Ok(Some(row)) => Ok(Some(Status::parse(row.get(0))?)),
        Ok(None) => Err(Error::NotFound(crate::Resource::Generation)),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Which path asks for the completion lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseBy {
    /// A status poll (or the sync wait): its lease yields to a webhook.
    Poll,
    /// A webhook delivery that waited for a poll's completion in vain: takes over
    /// the poll's lease, so that Replicate is not answered 503 for as long as polls
    /// keep coming.
    Webhook,
    /// The create call, the reconciler, or a webhook's first try.
    Other,
}

/// Takes the completion lease if the generation is still open and nobody holds
/// a live lease (a webhook also takes a poll's). Returns whether this caller
/// now owns the copy step. Two holders at once are safe, only wasteful: the
/// copy goes to the same key, and the completing transaction runs once.
pub async fn try_lease(
    db: &impl Sql,
    id: Uuid,
    owner: Uuid,
    length: std::time::Duration,
    by: LeaseBy,
) -> Result<bool> {
    let n = db
        .execute(
            "UPDATE generations
                SET lease_owner = $2, lease_until = now() + make_interval(secs => $3),
                    lease_yields = $4, updated_at = now()
              WHERE id = $1 AND status IN ('pending', 'processing')
                AND (lease_until IS NULL OR lease_until < now() OR ($5 AND lease_yields))",
            &[
                &id,
                &owner,
                &length.as_secs_f64(),
                &(by == LeaseBy::Poll),
                &(by == LeaseBy::Webhook),
            ],
        )
        .await?;
    Ok(n == 1)
}

/// Claims up to `limit` open generations older than `grace_secs` that no reconciler
/// run claimed in the last minute (`FOR UPDATE SKIP LOCKED`: overlapping runs skip each other's).
pub async fn claim_for_reconcile(
    db: &impl Sql,
    grace_secs: f64,
    limit: i64,
) -> Result<Vec<Generation>> {
    let rows = db
        .query(
            "UPDATE generations SET reconciled_at = now()
              WHERE id IN (SELECT id FROM generations
                            WHERE status IN ('pending', 'processing')
                              AND created_at < now() - make_interval(secs => $1)
                              AND (reconciled_at IS NULL OR reconciled_at < now() - interval '1 minute')
                            ORDER BY created_at LIMIT $2
                            FOR UPDATE SKIP LOCKED)
              RETURNING *",
            &[&grace_secs, &limit],
        )
        .await?;
    rows.iter().map(Generation::from_row).collect()
}

/// Counts one more reconciler run that found the generation's prediction
/// unknown to the provider; returns the count.
pub async fn note_prediction_missing(db: &impl Sql, id: Uuid) -> Result<i32> {
    let row = db
        .query_one(
            "UPDATE generations SET prediction_missing = prediction_missing + 1
              WHERE id = $1 RETURNING prediction_missing",
            &[&id],
        )
        .await?;
    Ok(row.get(0))
}

/// Records that the user deleted the image of a completed generation.
pub async fn mark_image_deleted(db: &impl Sql, id: Uuid) -> Result<()> {
    db.execute(
        "UPDATE generations SET image_deleted_at = now(), updated_at = now() WHERE id = $1",
        &[&id],
    )
    .await?;
    Ok(())
}

/// Whether `owner` still holds the generation's completion lease.
pub async fn holds_lease(db: &impl Sql, id: Uuid, owner: Uuid) -> Result<bool> {
    let row = db
        .query_opt(
            "SELECT 1 FROM generations WHERE id = $1 AND lease_owner = $2 AND lease_until > now()",
            &[&id, &owner],
        )
        .await?;
    Ok(row.is_some())
}

/// Gives up `owner`'s completion lease (if it still holds it).
pub async fn release_lease(db: &impl Sql, id: Uuid, owner: Uuid) -> Result<()> {
    db.execute(
        "UPDATE generations SET lease_owner = NULL, lease_until = NULL
          WHERE id = $1 AND lease_owner = $2",
        &[&id, &owner],
    )
    .await?;
    Ok(())
}

/// Marks the time of a provider poll; returns false if another poll ran within `min_gap_ms`.
pub async fn claim_poll(db: &impl Sql, id: Uuid, min_gap_ms: i32) -> Result<bool> {
    let n = db
        .execute(
            "UPDATE generations SET last_polled_at = now()
              WHERE id = $1 AND status IN ('pending', 'processing')
                AND (last_polled_at IS NULL OR last_polled_at < now() - make_interval(secs => $2))",
            &[&id, &(min_gap_ms as f64 / 1000.0)],
        )
        .await?;
    Ok(n == 1)
}

/// How many generations the user has pending or processing, and in how many
/// seconds the first of them is expected to end (from its model's estimated
/// time; at least 1).
pub async fn in_flight(db: &impl Sql, user_id: Uuid) -> Result<(i64, u32)> {
    let row = db
        .query_one(
            "SELECT count(*),
                    coalesce(min(greatest(1, ceil(m.estimated_time_seconds
                                 - extract(epoch FROM now() - g.created_at))))::int, 1)
               FROM generations g JOIN models m ON m.id = g.model_id
              WHERE g.user_id = $1 AND g.status IN ('pending', 'processing')",
            &[&user_id],
        )
        .await?;
    Ok((row.get(0), row.get::<_, i32>(1).unsigned_abs()))
}

/// Whether the user has batch items waiting for a slot.
pub async fn has_queued(db: &impl Sql, user_id: Uuid) -> Result<bool> {
    Ok(db
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM generations WHERE user_id = $1 AND status = 'queued')",
            &[&user_id],
        )
        .await?
        .get(0))
}

/// Moves the user's oldest queued item (of a batch not cancelled; oldest
/// batch first, then in item order) to `pending`, its deadline starting now
/// (`created_at`); returns it with its batch's API URL. Run it with the
/// user's quota row locked, so that the cap holds.
pub async fn promote_queued(
    tx: &impl Sql,
    user_id: Uuid,
) -> Result<Option<(Generation, Option<String>)>> {
    let row = tx
        .query_opt(
            "UPDATE generations g SET status = 'pending', created_at = now(), updated_at = now()
               FROM batches b
              WHERE b.id = g.batch_id
                AND g.id = (SELECT q.id FROM generations q
                              JOIN batches qb ON qb.id = q.batch_id
                              JOIN batch_items i ON i.generation_id = q.id
                             WHERE q.user_id = $1 AND q.status = 'queued' AND qb.cancelled_at IS NULL
                             ORDER BY q.created_at, qb.id, i.item_index LIMIT 1
                             FOR UPDATE OF q SKIP LOCKED)
          RETURNING g.*, b.api_base",
            &[&user_id],
        )
        .await?;
    row.map(|r| Ok((Generation::from_row(&r)?, r.get("api_base"))))
        .transpose()
}

/// Users with batch items waiting (of batches not cancelled) and fewer than
/// `cap` generations running, the longest waiting first; at most `limit`.
pub async fn users_with_queued(db: &impl Sql, cap: i64, limit: i64) -> Result<Vec<Uuid>> {
    let rows = db
        .query(
            "SELECT g.user_id FROM generations g JOIN batches b ON b.id = g.batch_id
              WHERE g.status = 'queued' AND b.cancelled_at IS NULL
              GROUP BY g.user_id
             HAVING (SELECT count(*) FROM generations r
                      WHERE r.user_id = g.user_id AND r.status IN ('pending', 'processing')) < $1
              ORDER BY min(g.created_at) LIMIT $2",
            &[&cap, &limit],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Open generations (queued ones too) of batches cancelled over `after_secs`
/// ago: a cancel cut short left them (at most `limit`).
pub async fn open_in_cancelled_batches(
    db: &impl Sql,
    after_secs: f64,
    limit: i64,
) -> Result<Vec<Generation>> {
    let rows = db
        .query(
            "SELECT g.* FROM generations g JOIN batches b ON b.id = g.batch_id
              WHERE g.status IN ('queued', 'pending', 'processing')
                AND b.cancelled_at < now() - make_interval(secs => $1)
              LIMIT $2",
            &[&after_secs, &limit],
        )
        .await?;
    rows.iter().map(Generation::from_row).collect()
}

/// Records what the provider reports of an open generation: its progress (never
/// going back) and when it started.
pub async fn record_progress(
    db: &impl Sql,
    id: Uuid,
    progress: Option<f32>,
    started_at: Option<DateTime<Utc>>,
) -> Result<()> {
    db.execute(
        "UPDATE generations
            SET progress = greatest(progress, $2), started_at = coalesce(started_at, $3)
          WHERE id = $1 AND status IN ('pending', 'processing')",
        &[&id, &progress, &started_at],
    )
    .await?;
    Ok(())
}

/// Moves an open generation (already locked by the caller) to a terminal
/// status; returns its model's name (for metrics).
pub async fn finish(
    db: &impl Sql,
    id: Uuid,
    status: Status,
    credits_used: i32,
    error: Option<crate::ErrorCode>,
) -> Result<String> {
    let (code, message) = error.map(|e| (e.as_str(), e.message())).unzip();
    let row = db
        .query_one(
            "UPDATE generations
                SET status = $2, credits_used = $3, error_code = $4, error_message = $5,
                    progress = CASE WHEN $2 = 'completed' THEN 1 ELSE progress END,
                    lease_owner = NULL, lease_until = NULL, completed_at = now(), updated_at = now()
              WHERE id = $1
          RETURNING (SELECT name FROM models WHERE models.id = generations.model_id)",
            &[&id, &status.as_str(), &credits_used, &code, &message],
        )
        .await?;
    Ok(row.get(0))
}

/// Frees the generation's `Idempotency-Key` (a refused start: a retry with the key runs again).
pub async fn forget_key(db: &impl Sql, id: Uuid) -> Result<()> {
    db.execute(
        "UPDATE generations SET idempotency_key = NULL, request_hash = NULL WHERE id = $1",
        &[&id],
    )
    .await?;
    Ok(())
}

/// What the provider reported of a finished prediction, and what it bills
/// (`crate::usage::billable`).
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderReport {
    /// When the provider created the prediction.
    pub created_at: Option<DateTime<Utc>>,
    /// When the model began running it.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached its terminal status at the provider.
    pub completed_at: Option<DateTime<Utc>>,
    /// `metrics.predict_time`, seconds.
    pub predict_time: Option<f64>,
    /// Output images billed by a per-image model.
    pub billed_images: i32,
    /// Seconds billed by a per-second model.
    pub billed_seconds: f64,
}

/// The usage recorded for a generation.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedUsage {
    /// The model's name (`flux-schnell`), for metrics.
    pub model: String,
    /// The estimated provider cost at the model's price.
    pub cost_usd: f64,
    /// Whether this is the first terminal report recorded for it.
    pub first: bool,
}

/// Records a finished prediction's timings and estimated cost on its generation,
/// whatever its status (later reports overwrite earlier ones); `None` if there is no such generation.
pub async fn record_usage(
    db: &impl Sql,
    id: Uuid,
    r: &ProviderReport,
) -> Result<Option<RecordedUsage>> {
    let row = db
        .query_opt(
            "WITH before AS (SELECT provider_completed_at FROM generations WHERE id = $1 FOR UPDATE)
             UPDATE generations g
                SET provider_created_at = coalesce($2, g.provider_created_at),
                    started_at = coalesce($3, g.started_at),
                    provider_completed_at = coalesce($4, g.provider_completed_at),
                    predict_time = coalesce($5, g.predict_time),
                    provider_cost_usd = CASE m.billing
                        WHEN 'per_image' THEN m.price_usd * $6::int
                        ELSE m.price_usd * $7::float8::numeric END
               FROM models m, before b
              WHERE g.id = $1 AND m.id = g.model_id
          RETURNING m.name, g.provider_cost_usd::float8,
                    b.provider_completed_at IS NULL AND g.provider_completed_at IS NOT NULL",
            &[
                &id,
                &r.created_at,
                &r.started_at,
                &r.completed_at,
                &r.predict_time,
                &r.billed_images,
                &r.billed_seconds,
            ],
        )
        .await?;
    Ok(row.map(|r| RecordedUsage {
        model: r.get(0),
        cost_usd: r.get(1),
        first: r.get(2),
    }))
}

/// Where a history page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// After this many of the newest (`?page=`, bounded by the caller).
    Offset(i64),
    /// After this generation (`?cursor=`), or from the newest.
    After(Option<super::Cursor>),
}

/// Up to `limit` of the user's generations, newest first (optionally of one
/// status), from `start`: by cursor, an index range scan whatever the user's size.
pub async fn page(
    db: &impl Sql,
    user_id: Uuid,
    status: Option<Status>,
    start: Start,
    limit: i64,
) -> Result<Vec<Generation>> {
    let status = status.map(Status::as_str);
    let (offset, (at, id)) = match start {
        Start::Offset(n) => (n, (None, None)),
        Start::After(c) => (0, c.unzip()),
    };
    let rows = db
        .query(
            "SELECT * FROM generations
              WHERE user_id = $1 AND ($2::text IS NULL OR status = $2)
                AND ($3::timestamptz IS NULL OR (created_at, id) < ($3::timestamptz, $4::uuid))
              ORDER BY created_at DESC, id DESC OFFSET $5 LIMIT $6",
            &[&user_id, &status, &at, &id, &offset, &limit],
        )
        .await?;
    rows.iter().map(Generation::from_row).collect()
}

/// How many generations the user has (of one status): one row of
/// `generation_counts`, which a trigger keeps in step with the rows (V14).
pub async fn count(db: &impl Sql, user_id: Uuid, status: Option<Status>) -> Result<i64> {
    let row = db
        .query_opt(
            "SELECT CASE $2::text WHEN 'queued' THEN queued WHEN 'pending' THEN pending WHEN 'processing' THEN processing
                                  WHEN 'completed' THEN completed WHEN 'failed' THEN failed
                                  WHEN 'cancelled' THEN cancelled
                                  ELSE queued + pending + processing + completed + failed + cancelled END
               FROM generation_counts WHERE user_id = $1",
            &[&user_id, &status.map(Status::as_str)],
        )
        .await?;
    Ok(row.map_or(0, |r| r.get(0)))
}
