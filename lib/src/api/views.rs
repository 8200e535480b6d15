//! JSON shapes of generations and images, shared by the routes that return them.

use serde_json::{Value, json};

use crate::{
    AppState, Result,
    db::{
        generations::{Generation, Status},
        images::{self, Image},
    },
};

/// An image as clients see it, with a downloadable URL.
pub async fn image(st: &AppState, img: &Image) -> Result<Value> {
    Ok(json!({
        "id": img.id,
        "generationId": img.generation_id,
        "prompt": img.prompt,
        "negativePrompt": img.negative_prompt,
        "model": img.model,
        "width": img.width,
        "height": img.height,
        "format": img.format,
        "fileSize": img.file_size,
        "url": st.storage.url(&img.storage_key).await?,
        "isFavorite": img.is_favorite,
        "createdAt": img.created_at,
    }))
}

/// A generation with its image (when completed and not deleted), its charge
/// and the user's remaining free generations.
pub async fn generation(st: &AppState, g: &Generation) -> Result<Value> {
    let db = st.db.get().await?;
    let free = st.credits.free_remaining(&**db, g.user_id).await?;
    let img = match g.status {
        Status::Completed => images::get_for_generation(&**db, g.id).await?,
        _ => None,
    };
    drop(db);
    render(st, g, img.as_ref(), free).await
}

/// The JSON of a generation whose image and free count are already loaded.
pub async fn render(
    st: &AppState,
    g: &Generation,
    img: Option<&Image>,
    free_remaining: i32,
) -> Result<Value> {
    let mut v = json!({
        "generationId": g.id,
        "status": g.status,
        "prompt": g.prompt,
        "negativePrompt": g.negative_prompt,
        "modelId": g.model_id,
        "width": g.width,
        "height": g.height,
        "charge": g.charge,
        "creditsUsed": g.credits_used,
        "freeGenerationsRemaining": free_remaining,
        "createdAt": g.created_at,
        "completedAt": g.completed_at,
    });
    if let Some(img) = img {
        v["image"] = image(st, img).await?;
    }
    if let (Some(code), Some(message)) = (&g.error_code, &g.error_message) {
        v["error"] = json!({"code": code, "message": message});
    }
    Ok(v)
}
