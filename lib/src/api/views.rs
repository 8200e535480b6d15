//! What clients see of generations and images: typed views (camelCase JSON),
//! built from the rows and shared by the routes that return them.

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

/// An image with a URL it can be downloaded from, and its thumbnail's URL and
/// blurhash (`null` when it has none: not decodable, or not backfilled yet).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageView {
    pub id: Uuid,
    pub generation_id: Uuid,
    pub prompt: String,
    pub negative_prompt: Option<String>,
    pub model: String,
    pub width: i32,
    pub height: i32,
    pub format: String,
    pub file_size: i64,
    pub url: String,
    pub thumbnail_url: Option<String>,
    pub blurhash: Option<String>,
    pub is_favorite: bool,
    pub created_at: DateTime<Utc>,
}

/// Why a generation failed.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorView {
    pub code: String,
    pub message: String,
}

/// A generation with its images (when completed and not deleted), its charge
/// and the user's remaining free generations.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationView {
    pub generation_id: Uuid,
    pub status: Status,
    pub prompt: String,
    pub negative_prompt: Option<String>,
    pub model_id: Uuid,
    pub width: i32,
    pub height: i32,
    /// Outputs asked for; `images` holds those delivered and kept.
    pub num_outputs: i32,
    /// The batch it is an item (or a retried item) of.
    pub batch_id: Option<Uuid>,
    pub charge: Charge,
    /// Credits really charged: for the outputs delivered only.
    pub credits_used: i32,
    pub free_generations_remaining: i32,
    /// 0 to 1, `null` until anything is known, 1 once completed.
    pub progress: Option<f32>,
    /// When the provider began running it (`null` while queued or booting).
    pub started_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    /// The first of `images` (for clients that show one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageView>,
    pub images: Vec<ImageView>,
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
