//! The model catalog (`models` table).

use super::Sql;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::Result;

/// A Replicate model offered to users, with its limits and defaults.
#[derive(Debug, Clone)]
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

impl From<&Row> for Model {
    fn from(r: &Row) -> Self {
        Model {
            id: r.get("id"),
            name: r.get("name"),
            display_name: r.get("display_name"),
            description: r.get("description"),
            replicate_id: r.get("replicate_id"),
            version: r.get("version"),
            versions: r.get("versions"),
            default_width: r.get("default_width"),
            default_height: r.get("default_height"),
            default_steps: r.get("default_steps"),
            default_guidance_scale: r.get("default_guidance_scale"),
            min_width: r.get("min_width"),
            min_height: r.get("min_height"),
            max_width: r.get("max_width"),
            max_height: r.get("max_height"),
            max_steps: r.get("max_steps"),
            supports_negative_prompt: r.get("supports_negative_prompt"),
            supports_img2img: r.get("supports_img2img"),
            supports_seed: r.get("supports_seed"),
            max_outputs: r.get("max_outputs"),
            moderate_outputs: r.get("moderate_outputs"),
            is_default: r.get("is_default"),
            sort_order: r.get("sort_order"),
            estimated_time_seconds: r.get("estimated_time_seconds"),
        }
    }
}

/// Active models, default first, then by sort order.
pub async fn list_active(db: &impl Sql) -> Result<Vec<Model>> {
    let rows = db
        .query(
            "SELECT * FROM models WHERE is_active ORDER BY is_default DESC, sort_order, name",
            &[],
        )
        .await?;
    Ok(rows.iter().map(Model::from).collect())
}

impl Model {
    /// Whether a caller may run `version` of this model: its own version or one listed beside it.
    pub fn offers_version(&self, version: &str) -> bool {
        self.version.as_deref() == Some(version) || self.versions.iter().any(|v| v == version)
    }
}
