//! The model catalog (`models` table).

use super::Sql;
use postgres_from_row::FromRow;
use serde::Serialize;
use uuid::Uuid;

use crate::Result;

/// A Replicate model offered to users, with its limits and defaults: also its
/// public view (`GET /models`), since the contract shows every column but
/// `is_active` (docs/openapi.yaml `Model`; a test keeps the two equal).
#[derive(Debug, Clone, FromRow, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Model {
    /// The model's id (`modelId`).
    pub id: Uuid,
    /// Short stable name (`flux-schnell`).
    pub name: String,
    /// Name to show.
    pub display_name: String,
    /// One line on what it is good at.
    pub description: String,
    /// The Replicate model (`owner/name`); also picks its input family (`replicate::inputs`).
    pub replicate_id: String,
    /// The pinned version id; `None` runs the latest through the official-model route.
    pub version: Option<String>,
    /// Other version ids a caller may ask for with `modelVersion`.
    pub versions: Vec<String>,
    /// Width used when none is asked.
    pub default_width: i32,
    /// Height used when none is asked.
    pub default_height: i32,
    /// Steps used when none are asked.
    pub default_steps: i32,
    /// Guidance scale used when none is asked.
    pub default_guidance_scale: f64,
    /// Smallest width accepted, in pixels.
    pub min_width: i32,
    /// Smallest height accepted, in pixels.
    pub min_height: i32,
    /// Largest width accepted, in pixels.
    pub max_width: i32,
    /// Largest height accepted, in pixels.
    pub max_height: i32,
    /// Most steps accepted.
    pub max_steps: i32,
    /// Whether `negativePrompt` may be given.
    pub supports_negative_prompt: bool,
    /// Whether a source image may be given (`sourceImageUrl`, `sourceImageId`).
    #[serde(rename = "supportsImg2Img")]
    pub supports_img2img: bool,
    /// Whether `seed` may be given.
    pub supports_seed: bool,
    /// The most outputs one generation may ask for (`numOutputs`).
    pub max_outputs: i32,
    /// Its outputs are checked by the image moderation provider before they are stored.
    pub moderate_outputs: bool,
    /// Whether it runs when no `modelId` is given (one model at most).
    pub is_default: bool,
    /// Its place in the list, after the default.
    pub sort_order: i32,
    /// Typical seconds a generation takes (also sizes the `Retry-After` of `TOO_MANY_IN_FLIGHT`).
    pub estimated_time_seconds: i32,
}

/// Active models, default first, then by sort order.
pub async fn list_active(db: &impl Sql) -> Result<Vec<Model>> {
    let rows = db
        .query(
            "SELECT * FROM models WHERE is_active ORDER BY is_default DESC, sort_order, name",
            &[],
        )
        .await?;
    Ok(rows.iter().map(Model::from_row).collect())
}

impl Model {
    /// Whether a caller may run `version` of this model: its own version or one listed beside it.
    pub fn offers_version(&self, version: &str) -> bool {
        self.version.as_deref() == Some(version) || self.versions.iter().any(|v| v == version)
    }
}
