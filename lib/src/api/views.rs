//! What clients see: typed views (camelCase JSON) of generations, images,
//! models, pages and acknowledgements, built from the rows and shared by the
//! routes that return them. No answer body is built any other way.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::{
    AppState, Result,
    credits::Charge,
    db::{
        generations::{Generation, Status},
        images::{self, Image},
    },
};

/// A page of a list walked by cursor (`GET /images`, `/batches`, `/credits/transactions`,
/// and inside [`HistoryPage`]).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    /// This page's entries, newest first.
    pub data: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// A page of `GET /generate/history`: a [`Page`] that also counts.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryPage {
    /// This page's generations, newest first, and the cursor of the next.
    #[serde(flatten)]
    pub entries: Page<GenerationView>,
    /// How many generations match the filter.
    pub total: i64,
    /// The page number asked for; `null` for a page asked by cursor.
    pub page: Option<i64>,
    /// Generations per page.
    pub limit: i64,
    /// Pages of `limit` in `total`.
    pub total_pages: i64,
}

/// A webhook delivery taken (`{"received": true}`), marked when seen before.
#[derive(Debug, Serialize)]
pub struct Received {
    /// Always true: the delivery was taken.
    pub received: bool,
    /// Present (true) when this delivery had been applied already.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

impl Received {
    /// A delivery applied now.
    pub const NEW: Received = Received {
        received: true,
        duplicate: false,
    };
    /// A delivery applied before.
    pub const DUPLICATE: Received = Received {
        received: true,
        duplicate: true,
    };
}

/// An image with a URL it can be downloaded from, and its thumbnail's URL and
/// blurhash (`null` when it has none: not decodable, or not backfilled yet).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageView {
    /// The image's id (`/images/{id}`).
    pub id: Uuid,
    /// The generation it is an output of.
    pub generation_id: Uuid,
    /// Its generation's prompt (with `, {style}` appended if a style was given).
    pub prompt: String,
    /// Its generation's negative prompt; `null` when none.
    pub negative_prompt: Option<String>,
    /// The model's short name (`flux-schnell`).
    pub model: String,
    /// Width in pixels, as stored.
    pub width: i32,
    /// Height in pixels, as stored.
    pub height: i32,
    /// The file format: `png`, `jpg`, `webp`, `gif` or `svg`.
    pub format: String,
    /// The file's size in bytes.
    pub file_size: i64,
    /// Where to download it: presigned (valid `IMAGE_URL_TTL_SECONDS`) or on the CDN.
    pub url: String,
    /// A WebP at most 384 px on its longer side, served like `url`; `null` when none.
    pub thumbnail_url: Option<String>,
    /// A BlurHash (4×3 components) for a placeholder; `null` when `thumbnailUrl` is.
    pub blurhash: Option<String>,
    /// Whether its user marked it as a favourite.
    pub is_favorite: bool,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
}

/// Why a generation failed.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorView {
    /// A stable code (`TIMEOUT`, `CONTENT_REFUSED`, `PROVIDER_ERROR`, …).
    pub code: String,
    /// What happened, in words.
    pub message: String,
}

/// A generation with its images (when completed and not deleted), its charge
/// and the user's remaining free generations.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationView {
    /// The generation's id (`GET /generate/{id}/status`).
    pub generation_id: Uuid,
    /// Where it is in its life.
    pub status: Status,
    /// The prompt as sent (with `, {style}` appended if a style was given).
    pub prompt: String,
    /// The negative prompt; `null` when none was given.
    pub negative_prompt: Option<String>,
    /// The model that runs it.
    pub model_id: Uuid,
    /// Width asked for, in pixels (the model's default when none was).
    pub width: i32,
    /// Height asked for, in pixels (the model's default when none was).
    pub height: i32,
    /// Outputs asked for; `images` holds those delivered and kept.
    pub num_outputs: i32,
    /// The batch it is an item (or a retried item) of.
    pub batch_id: Option<Uuid>,
    /// `free`: all outputs free; `credits`: some cost credits; `waived`: credits not enforced.
    pub charge: Charge,
    /// Credits really charged: for the outputs delivered only.
    pub credits_used: i32,
    /// Free generations the user has left now.
    pub free_generations_remaining: i32,
    /// 0 to 1, `null` until anything is known, 1 once completed.
    pub progress: Option<f32>,
    /// When the provider began running it (`null` while queued or booting).
    pub started_at: Option<DateTime<Utc>>,
    /// When it was asked for (a batch item: when it started).
    pub created_at: DateTime<Utc>,
    /// When it completed, failed or was cancelled; `null` while open.
    pub completed_at: Option<DateTime<Utc>>,
    /// The first of `images` (for clients that show one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageView>,
    /// The images delivered and kept, in output order (empty until completed).
    pub images: Vec<ImageView>,
    /// Why it failed; absent unless it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorView>,
}

/// The view of an image.
pub async fn image(st: &AppState, img: &Image) -> Result<ImageView> {
    let thumb = img.file.thumbnail.as_ref();
    let thumbnail_url = match thumb {
        Some(t) => Some(st.storage.url(&t.key).await?),
        None => None,
    };
    Ok(ImageView {
        id: img.id,
        generation_id: img.file.generation_id,
        prompt: img.prompt.clone(),
        negative_prompt: img.negative_prompt.clone(),
        model: img.model.clone(),
        width: img.file.width,
        height: img.file.height,
        format: img.file.format.clone(),
        file_size: img.file.file_size,
        url: st.storage.url(&img.file.storage_key).await?,
        thumbnail_url,
        blurhash: thumb.map(|t| t.blurhash.clone()),
        is_favorite: img.is_favorite,
        created_at: img.created_at,
    })
}

/// The view of a generation, loading its images and the user's free count.
pub async fn generation(st: &AppState, g: &Generation) -> Result<GenerationView> {
    let db = st.db.get().await?;
    let free = st.credits.free_remaining(&**db, g.user_id).await?;
    let imgs = match g.status {
        Status::Completed => images::for_generation(&**db, g.id).await?,
        _ => Vec::new(),
    };
    drop(db);
    render(st, g, &imgs, free).await
}

/// The view of a generation whose images (in output order) and free count
/// are already loaded.
pub async fn render(
    st: &AppState,
    g: &Generation,
    imgs: &[Image],
    free_remaining: i32,
) -> Result<GenerationView> {
    let mut images = Vec::with_capacity(imgs.len());
    for img in imgs {
        images.push(image(st, img).await?);
    }
    let error = match (&g.error_code, &g.error_message) {
        (Some(code), Some(message)) => Some(ErrorView {
            code: code.clone(),
            message: message.clone(),
        }),
        _ => None,
    };
    Ok(GenerationView {
        generation_id: g.id,
        status: g.status,
        prompt: g.request.prompt.clone(),
        negative_prompt: g.request.negative_prompt.clone(),
        model_id: g.model_id,
        width: g.request.width,
        height: g.request.height,
        num_outputs: g.request.num_outputs,
        batch_id: g.batch_id,
        charge: g.charge,
        credits_used: g.credits_used,
        free_generations_remaining: free_remaining,
        progress: g.progress,
        started_at: g.started_at,
        created_at: g.created_at,
        completed_at: g.completed_at,
        image: images.first().cloned(),
        images,
        error,
    })
}
