//! A user's copy of their data (`POST /me/export`): one zip in S3 at
//! `users/{userId}/exports/{exportId}.zip` holding `export.json` (the credit
//! profile, ledger entries, generations with their prompts, images with their
//! metadata) and every image under `images/`. It is built in a temporary
//! file, rows a page at a time and one image in memory at a time, then
//! uploaded from the file: memory stays bounded whatever the account's size.
//! A run holds the export's lease; one cut short is run again from the start
//! (the zip's key is the same) by the reconciler. A ready export is kept for
//! a day; then the reconciler deletes its object.

use std::{
    io::{Seek, Write},
    time::{Duration, Instant},
};

use serde::Serialize;
use uuid::Uuid;
use zip::{CompressionMethod, ZipWriter, write::SimpleFileOptions};

use crate::{
    AppState, Error, Result,
    db::{
        Cursor, accounts,
        exports::{self, Export},
        generations::{self, Generation, Start},
        images::{self, Image},
        ledger,
    },
};

/// How long a ready export is kept (and its URL valid).
pub const KEPT: Duration = Duration::from_secs(24 * 3600);
/// Rows read at a time.
const PAGE: i64 = 500;
/// Tries after which an export that runs out of time is given up.
const MAX_ATTEMPTS: i32 = 5;
/// Time a lease holder keeps beyond its deadline.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// The object key of an export's zip.
pub fn key(user: Uuid, id: Uuid) -> String {
    format!("users/{user}/exports/{id}.zip")
}

/// Builds the export `id` if nobody else is, within `deadline`; returns
/// whether it is ready now. A passing fault or the deadline leaves it pending
/// for the reconciler; a permanent error fails it, and so does running out of
/// time once it has been tried [`MAX_ATTEMPTS`] times.
pub async fn make(st: &AppState, id: Uuid, deadline: Instant) -> Result<bool> {
    let lease = deadline.saturating_duration_since(Instant::now()) + LEASE_MARGIN;
    let db = st.db.get().await?;
    let Some(export) = exports::claim(&**db, id, lease.as_secs_f64()).await? else {
        return Ok(false);
    };
    drop(db);
    let built = tokio::time::timeout_at(deadline.into(), build(st, &export)).await;
    let give_up = match built.unwrap_or(Err(Error::TimedOut("export"))) {
        Ok(()) => return Ok(true),
        // Its own time ran out every time: more than a run can do.
        Err(Error::TimedOut(_)) if export.attempts >= MAX_ATTEMPTS => {
            "the account is too large to export within the time a run has".to_string()
        }
        Err(e) if !e.is_transient() => e.to_string(),
        // A passing fault (S3, the database): the next run tries again.
        Err(e) => {
            tracing::warn!(export_id = %id, error = %e, "export not finished; left for the reconciler");
            return Ok(false);
        }
    };
    tracing::error!(export_id = %id, error = %give_up, "export given up");
    exports::fail(&**st.db.get().await?, id, &give_up).await?;
    Ok(false)
}

/// Writes the zip to a temporary file, uploads it and marks the export ready.
async fn build(st: &AppState, export: &Export) -> Result<()> {
    let user = export.user_id;
    let file = tempfile::tempfile().map_err(io)?;
    let mut zip = ZipWriter::new(file);
    let count = write_json(st, &mut zip, export).await?;
    write_images(st, &mut zip, user).await?;
    let mut file = zip
        .finish()
        .map_err(|e| Error::Internal(format!("zip: {e}")))?;
    let size = file.stream_position().map_err(io)?;
    file.rewind().map_err(io)?;
    // A deletion of the account under way: nothing of theirs may be stored again.
    let db = st.db.get().await?;
    if accounts::deletion_finished(&**db, user).await? == Some(false) {
        exports::fail(&**db, export.id, "account deleted").await?;
        return Ok(());
    }
    drop(db);
    let key = key(user, export.id);
    st.storage.put_file(&key, "application/zip", file).await?;
    let size = i64::try_from(size).unwrap_or(i64::MAX);
    let db = st.db.get().await?;
    let kept = KEPT.as_secs_f64();
    if !exports::finish(&**db, export.id, &key, count, size, kept).await? {
        // A deletion ended it while the zip was uploading: the zip goes too.
        drop(db);
        st.storage.delete(&key).await?;
        return Ok(());
    }
    tracing::info!(export_id = %export.id, %user, images = count, bytes = size, "export ready");
    Ok(())
}

fn io(e: std::io::Error) -> Error {
    Error::Internal(format!("export file: {e}"))
}

/// Writes `export.json`, streaming each list a page at a time; returns how many images it lists.
async fn write_json<W: Write + Seek + Send>(
    st: &AppState,
    zip: &mut ZipWriter<W>,
    export: &Export,
) -> Result<i32> {
    let user = export.user_id;
    let options = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    zip.start_file("export.json", options)
        .map_err(|e| Error::Internal(format!("zip: {e}")))?;
    let db = st.db.get().await?;
    let head = Head {
        export_id: export.id,
        user_id: user,
        exported_at: chrono::Utc::now(),
        credits: st.credits.balance(&**db, user).await?,
        free_generations_remaining: st.credits.free_remaining(&**db, user).await?,
    };
    drop(db);
    // The head's fields, then the three lists, each streamed.
    let head = serde_json::to_string(&head).map_err(|e| Error::Internal(format!("json: {e}")))?;
    put(zip, head.strip_suffix('}').unwrap_or(&head).as_bytes())?;

    put(zip, b",\"ledger\":[")?;
    let (mut pages, mut first) = (Pages::default(), true);
    while let Some(after) = pages.next() {
        let page = ledger::page(&**st.db.get().await?, user, after, PAGE).await?;
        for t in &page {
            item(zip, &mut first, t)?;
        }
        pages.read(&page, |t| (t.created_at, t.id));
    }

    put(zip, b"],\"generations\":[")?;
    let (mut pages, mut first) = (Pages::default(), true);
    while let Some(after) = pages.next() {
        let db = st.db.get().await?;
        let page = generations::page(&**db, user, None, Start::After(after), PAGE).await?;
        for g in &page {
            item(zip, &mut first, &ExportedGeneration::from(g))?;
        }
        pages.read(&page, |g| (g.created_at, g.id));
    }

    put(zip, b"],\"images\":[")?;
    let (mut pages, mut first, mut count) = (Pages::default(), true, 0);
    while let Some(after) = pages.next() {
        let page = images::list(&**st.db.get().await?, user, false, after, PAGE).await?;
        for img in &page {
            item(zip, &mut first, &ExportedImage::from(img))?;
        }
        count += page.len() as i32;
        pages.read(&page, |i| (i.created_at, i.id));
    }
    put(zip, b"]}")?;
    Ok(count)
}

/// Adds every image's bytes under `images/` (stored as they are: already compressed).
async fn write_images<W: Write + Seek + Send>(
    st: &AppState,
    zip: &mut ZipWriter<W>,
    user: Uuid,
) -> Result<()> {
    let options = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    let mut pages = Pages::default();
    while let Some(after) = pages.next() {
        let page = images::list(&**st.db.get().await?, user, false, after, PAGE).await?;
        for img in &page {
            // An object deleted meanwhile is left out (its row says so in export.json).
            let Some(bytes) = st.storage.read(&img.file.storage_key).await? else {
                continue;
            };
            zip.start_file(file_name(img), options)
                .map_err(|e| Error::Internal(format!("zip: {e}")))?;
            put(zip, &bytes)?;
        }
        pages.read(&page, |i| (i.created_at, i.id));
    }
    Ok(())
}

/// Keyset paging through rows newest first, [`PAGE`] at a time.
#[derive(Default)]
struct Pages {
    after: Option<Cursor>,
    done: bool,
}

impl Pages {
    /// Where the next page starts (`Some(None)`: at the newest), or `None` when all were read.
    fn next(&self) -> Option<Option<Cursor>> {
        (!self.done).then_some(self.after)
    }

    /// Takes note of a page just read: a short one is the last.
    fn read<T>(&mut self, page: &[T], cursor: fn(&T) -> Cursor) {
        match page.last() {
            Some(last) if page.len() as i64 == PAGE => self.after = Some(cursor(last)),
            _ => self.done = true,
        }
    }
}

fn put<W: Write>(zip: &mut W, bytes: &[u8]) -> Result<()> {
    zip.write_all(bytes).map_err(io)
}

/// Writes one element of a JSON list.
fn item<W: Write>(zip: &mut W, first: &mut bool, v: &impl Serialize) -> Result<()> {
    if !std::mem::take(first) {
        put(zip, b",")?;
    }
    let json = serde_json::to_vec(v).map_err(|e| Error::Internal(format!("json: {e}")))?;
    put(zip, &json)
}

/// An image's file in the zip.
fn file_name(img: &Image) -> String {
    format!("images/{}.{}", img.id, img.file.format)
}

/// The head of `export.json`: whose data, when, and the credits then.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    /// The export's id.
    export_id: Uuid,
    /// Whose data it is.
    user_id: Uuid,
    /// When the copy was made.
    exported_at: chrono::DateTime<chrono::Utc>,
    /// The balance then.
    credits: crate::credits::Balance,
    /// Free generations left then.
    free_generations_remaining: i32,
}

/// A generation as `export.json` lists it: what was asked, what it cost, how it ended.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExportedGeneration<'a> {
    /// The generation's id.
    id: Uuid,
    /// Where it stands.
    status: crate::db::generations::Status,
    /// The model it ran on.
    model_id: Uuid,
    /// The prompt.
    prompt: &'a str,
    /// What the image should not show.
    negative_prompt: Option<&'a str>,
    /// The style asked for.
    style: Option<&'a str>,
    /// Width in pixels.
    width: i32,
    /// Height in pixels.
    height: i32,
    /// Inference steps.
    steps: i32,
    /// How closely the model follows the prompt.
    guidance_scale: f64,
    /// The seed, if one was given.
    seed: Option<i64>,
    /// Outputs asked for.
    num_outputs: i32,
    /// The source image's URL (image-to-image), if one was given.
    source_image_url: Option<&'a str>,
    /// What was held or charged for it.
    charge: &'a crate::credits::Charge,
    /// Credits charged for its delivered outputs.
    credits_used: i32,
    /// The batch it belongs to, if any.
    batch_id: Option<Uuid>,
    /// Why it failed, if it did.
    error_code: Option<&'a str>,
    /// When it was asked.
    created_at: chrono::DateTime<chrono::Utc>,
    /// When it ended.
    completed_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl<'a> From<&'a Generation> for ExportedGeneration<'a> {
    fn from(g: &'a Generation) -> Self {
        ExportedGeneration {
            id: g.id,
            status: g.status,
            model_id: g.model_id,
            prompt: &g.request.prompt,
            negative_prompt: g.request.negative_prompt.as_deref(),
            style: g.request.style.as_deref(),
            width: g.request.width,
            height: g.request.height,
            steps: g.request.steps,
            guidance_scale: g.request.guidance_scale,
            seed: g.request.seed,
            num_outputs: g.request.num_outputs,
            source_image_url: g.request.source_image_url.as_deref(),
            charge: &g.charge,
            credits_used: g.credits_used,
            batch_id: g.batch_id,
            error_code: g.error_code.as_deref(),
            created_at: g.created_at,
            completed_at: g.completed_at,
        }
    }
}

/// An image as `export.json` lists it, with its file in the zip.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExportedImage<'a> {
    /// The image's id.
    id: Uuid,
    /// The generation that made it.
    generation_id: Uuid,
    /// Its file in the zip (`images/{id}.{format}`).
    file: String,
    /// `webp`, `png`, `jpg` or `svg`.
    format: &'a str,
    /// Width in pixels.
    width: i32,
    /// Height in pixels.
    height: i32,
    /// Size in bytes.
    file_size: i64,
    /// Whether the user marked it.
    is_favorite: bool,
    /// When it was stored.
    created_at: chrono::DateTime<chrono::Utc>,
    /// The prompt it was made from.
    prompt: &'a str,
    /// The model's name.
    model: &'a str,
}

impl<'a> From<&'a Image> for ExportedImage<'a> {
    fn from(img: &'a Image) -> Self {
        ExportedImage {
            id: img.id,
            generation_id: img.file.generation_id,
            file: file_name(img),
            format: &img.file.format,
            width: img.file.width,
            height: img.file.height,
            file_size: img.file.file_size,
            is_favorite: img.is_favorite,
            created_at: img.created_at,
            prompt: &img.prompt,
            model: &img.model,
        }
    }
}

/// What a reconciler run did with exports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Reconciled {
    /// Unfinished exports finished now.
    pub finished: usize,
    /// Ready exports past their day whose object was deleted now.
    pub expired: usize,
}

/// Finishes exports nobody is building (one at a time, until `until`) and
/// deletes those past their day.
pub async fn reconcile(st: &AppState, until: Instant) -> Result<Reconciled> {
    let mut done = Reconciled::default();
    for (id, key) in exports::expired(&**st.db.get().await?, 50).await? {
        st.storage.delete(&key).await?;
        exports::expire(&**st.db.get().await?, id).await?;
        done.expired += 1;
    }
    for id in exports::unclaimed(&**st.db.get().await?, 10).await? {
        if Instant::now() >= until {
            break;
        }
        if make(st, id, until).await? {
            done.finished += 1;
        }
    }
    Ok(done)
}
