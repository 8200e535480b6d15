//! `generate` function: `POST /generate`. Validates the request against
//! the HTTP contract (docs/openapi.yaml) and the model's own limits, takes a credit hold and starts the
//! prediction; with `waitForResult` it answers when done (or 202 before API
//! Gateway's 30 s limit).

use std::time::{Duration, Instant};

use axum::{extract::State, response::Response};
use http::{Method, StatusCode};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::views::{ErrorView, ImageView};
use crate::web::Problem;
use crate::{
    AppState, Error,
    credits::{Charge, Hold},
    db::{
        generations::{self, Generation, GenerationRequest, NewGeneration, RequestKey, Status},
        models::Model,
    },
    lifecycle, uploads,
    web::{
        self, ApiBase, AuthUser, Idempotency, JsonBody, Routes,
        policy::WRITE_ONCE,
        problem::FieldError,
        text::{Checker, Text},
    },
};

/// The routes of this function: declared once, with what each demands.
pub fn routes() -> Routes {
    Routes::new("generate")
        .route(Method::POST, "/api/v1/generate", WRITE_ONCE, generate)
        .with_router(|r| r.route_layer(axum::middleware::from_fn(web::ssrf::guard_source_image)))
}

/// A request that passed the checks that do not need the model.
#[derive(Debug, Default)]
pub(super) struct Request {
    /// `prompt`: 1 to 10,000 characters, not blank.
    pub(super) prompt: String,
    /// `modelId`; `None`: the default model.
    pub(super) model_id: Option<Uuid>,
    /// `modelVersion`: checked against the model's versions later.
    model_version: Option<String>,
    /// `negativePrompt`, up to 10,000 characters.
    pub(super) negative_prompt: Option<String>,
    /// `width`, 256 to 2048 pixels (the model's limits are checked later).
    width: Option<i32>,
    /// `height`, 256 to 2048 pixels (the model's limits are checked later).
    height: Option<i32>,
    /// `steps`, 1 to 150 (the model's `max_steps` is checked later).
    steps: Option<i32>,
    /// `guidanceScale`, 0 to 30.
    guidance_scale: Option<f64>,
    /// `seed`, 0 to 2³²−1.
    seed: Option<i64>,
    /// `sourceImageUrl`: https, to a host that passed the SSRF check.
    source_image_url: Option<String>,
    /// The caller's upload as the source image (exclusive with `source_image_url`).
    source_image_id: Option<Uuid>,
    /// `generationStrength`, 0 to 1.
    generation_strength: Option<f64>,
    /// `style`, up to 200 characters (appended to the prompt).
    pub(super) style: Option<String>,
    /// `numOutputs`, 1 to 4 (the model's `max_outputs` is checked later).
    num_outputs: Option<i32>,
    /// `waitForResult`: answer once done, up to `SYNC_WAIT_SECONDS`, rather than at once.
    wait_for_result: bool,
}

/// Checks the body's shape and bounds (docs/openapi.yaml, `GenerateRequest`).
fn parse(body: &Value) -> Result<Request, Problem> {
    check(body).map_err(Problem::validation)
}

/// [`parse`], with the fields that failed.
pub(super) fn check(body: &Value) -> Result<Request, Vec<FieldError>> {
    let mut c = Checker::of(body)?;
    let prompt = c.string("prompt", Text::Free, 1, 10_000);
    if c.field("prompt").is_none() {
        c.fail("prompt", "is required");
    } else if prompt.as_deref().is_some_and(|p| p.trim().is_empty()) {
        c.fail("prompt", "must not be blank");
    }
    let model_id = uuid(&mut c, "modelId");
    let source_image_url = c.string("sourceImageUrl", Text::Strict, 1, 2048);
    if let Some(Err(message)) = source_image_url.as_deref().map(web::ssrf::check) {
        c.fail("sourceImageUrl", message);
    }
    let source_image_id = uuid(&mut c, "sourceImageId");
    if source_image_id.is_some() && source_image_url.is_some() {
        c.fail("sourceImageId", "cannot be combined with sourceImageUrl");
    }
    let wait_for_result = match c.field("waitForResult") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            c.fail("waitForResult", "must be a boolean");
            false
        }
    };
    let req = Request {
        model_id,
        model_version: c.string("modelVersion", Text::Strict, 1, 200),
        negative_prompt: c.string("negativePrompt", Text::Free, 0, 10_000),
        width: c.int("width", 256, 2048).map(|v| v as i32),
        height: c.int("height", 256, 2048).map(|v| v as i32),
        steps: c.int("steps", 1, 150).map(|v| v as i32),
        guidance_scale: c.number("guidanceScale", 0.0, 30.0),
        seed: c.int("seed", 0, i64::from(u32::MAX)),
        generation_strength: c.number("generationStrength", 0.0, 1.0),
        style: c.string("style", Text::Free, 0, 200),
        num_outputs: c.int("numOutputs", 1, 4).map(|v| v as i32),
        source_image_url,
        source_image_id,
        wait_for_result,
        prompt: prompt.unwrap_or_default(),
    };
    c.unknown_fields();
    if c.errors.is_empty() {
        Ok(req)
    } else {
        Err(c.errors)
    }
}

/// The uuid in string `field`, if present (a failure otherwise).
fn uuid<'a>(c: &mut Checker<'a>, field: &'a str) -> Option<Uuid> {
    let id = Uuid::parse_str(&c.string(field, Text::Strict, 1, 64)?);
    id.map_err(|_| c.fail(field, "must be a uuid")).ok()
}

/// Checks the request against the model's limits and fills in its defaults.
pub(super) fn apply_model(
    req: &Request,
    model: &Model,
    user_id: Uuid,
) -> Result<NewGeneration, Vec<FieldError>> {
    let mut errors = Vec::new();
    let width = req.width.unwrap_or(model.default_width);
    let height = req.height.unwrap_or(model.default_height);
    if !(model.min_width..=model.max_width).contains(&width) {
        errors.push(FieldError::new(
            "width",
            format!(
                "must be from {} to {} for this model",
                model.min_width, model.max_width
            ),
        ));
    }
    if !(model.min_height..=model.max_height).contains(&height) {
        errors.push(FieldError::new(
            "height",
            format!(
                "must be from {} to {} for this model",
                model.min_height, model.max_height
            ),
        ));
    }
    if req.steps.is_some_and(|s| s > model.max_steps) {
        errors.push(FieldError::new(
            "steps",
            format!("must be at most {} for this model", model.max_steps),
        ));
    }
    if req
        .negative_prompt
        .as_deref()
        .is_some_and(|n| !n.is_empty())
        && !model.supports_negative_prompt
    {
        errors.push(FieldError::new(
            "negativePrompt",
            "is not supported by this model",
        ));
    }
    if !model.supports_img2img {
        let source = [
            ("sourceImageUrl", req.source_image_url.is_some()),
            ("sourceImageId", req.source_image_id.is_some()),
        ];
        for (field, _) in source.into_iter().filter(|(_, given)| *given) {
            errors.push(FieldError::new(field, "is not supported by this model"));
        }
    }
    if req.seed.is_some() && !model.supports_seed {
        errors.push(FieldError::new("seed", "is not supported by this model"));
    }
    let num_outputs = req.num_outputs.unwrap_or(1);
    if num_outputs > model.max_outputs {
        errors.push(FieldError::new(
            "numOutputs",
            format!("must be at most {} for this model", model.max_outputs),
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let prompt = match req.style.as_deref().filter(|s| !s.trim().is_empty()) {
        Some(style) => format!("{}, {style}", req.prompt),
        None => req.prompt.clone(),
    };
    Ok(NewGeneration {
        id: Uuid::new_v4(),
        user_id,
        model_id: model.id,
        request: GenerationRequest {
            prompt,
            negative_prompt: req.negative_prompt.clone().filter(|n| !n.is_empty()),
            width,
            height,
            steps: req.steps.unwrap_or(model.default_steps),
            guidance_scale: req.guidance_scale.unwrap_or(model.default_guidance_scale),
            seed: req.seed,
            source_image_url: req.source_image_url.clone(),
            source_upload_id: req.source_image_id,
            generation_strength: req.generation_strength,
            style: req.style.clone(),
            num_outputs,
        },
        idempotency: None,
        batch_id: None,
    })
}

async fn generate(
    State(st): State<AppState>,
    AuthUser(user_id): AuthUser,
    Idempotency(key): Idempotency,
    ApiBase(api_base): ApiBase,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    let began = Instant::now();
    let req = parse(&body)?;
    if let Some(k) = &key
        && let Some(g) = earlier(&st, user_id, k).await?
    {
        return answer(&st, &g, None).await;
    }
    let mut model = model(&st, req.model_id).await?;
    if let Some(v) = &req.model_version {
        // Only the catalog's versions: any other id would run another model on our token.
        if !model.offers_version(v) {
            return Err(Problem::validation(vec![FieldError::new(
                "modelVersion",
                "is not a version of this model",
            )]));
        }
        model.version = Some(v.clone());
    }
    let mut new = apply_model(&req, &model, user_id).map_err(Problem::validation)?;
    new.idempotency = key.clone();
    // Before anything is held: a refused prompt costs nothing and leaves nothing behind.
    let texts = [
        req.prompt.as_str(),
        req.negative_prompt.as_deref().unwrap_or_default(),
        req.style.as_deref().unwrap_or_default(),
    ];
    crate::moderation::check_texts(&st, user_id, &texts).await?;
    // Checked before anything is held: a refused source leaves nothing behind.
    let source_image = match req.source_image_id {
        Some(id) => Some(uploads::source(&st, user_id, id).await?),
        None => req.source_image_url.clone(),
    };
    // A source image is moderated like an output: as the provider will read it.
    if let Some(source) = &source_image {
        crate::moderation::check_image(&st, user_id, source).await?;
    }

    let hold = match lifecycle::begin(&st, &new, &model).await {
        // A concurrent request with the same key recorded its generation first.
        Err(Error::IdempotencyKeyTaken) => {
            let k = key.as_ref().ok_or(Error::IdempotencyKeyTaken)?;
            let g = earlier(&st, user_id, k)
                .await?
                .ok_or(Error::IdempotencyKeyTaken)?;
            return answer(&st, &g, None).await;
        }
        other => other?,
    };
    // From here on the generation exists: every path answers with it before the function's timeout.
    let budget = if req.wait_for_result {
        st.cfg.sync_wait.min(st.cfg.request_budget())
    } else {
        st.cfg.request_budget()
    };
    let deadline = began + budget;
    let wait = req.wait_for_result.then(|| {
        deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(Duration::from_secs(2))
    });
    let source_image = source_image.as_deref();
    match lifecycle::start(
        &st,
        &new,
        &model,
        source_image,
        api_base.as_deref(),
        wait,
        deadline,
    )
    .await
    {
        Ok(()) => {}
        // The only input Replicate can refuse that we did not check is a caller's version id.
        Err(Error::InputRefused) if req.model_version.is_some() => {
            return Err(Problem::validation(vec![FieldError::new(
                "modelVersion",
                "is not a version of this model",
            )]));
        }
        Err(e) => return Err(e.into()),
    }
    let mut g = lifecycle::load(&st, new.id).await?;
    if req.wait_for_result && !g.status.is_terminal() {
        g = lifecycle::wait_until(&st, g.id, deadline).await?;
    }
    answer(&st, &g, Some(&hold)).await
}

/// The catalog's model `id`, or the default one; 404 `MODEL_NOT_FOUND`.
pub(super) async fn model(st: &AppState, id: Option<Uuid>) -> Result<Model, Problem> {
    let models = st.models().await?;
    match id {
        Some(id) => models.iter().find(|m| m.id == id),
        None => models.iter().find(|m| m.is_default).or(models.first()),
    }
    .cloned()
    .ok_or_else(|| Error::NotFound(crate::Resource::Model).into())
}

/// The user's generation recorded earlier with this key; 409 if the key came with another body.
async fn earlier(
    st: &AppState,
    user_id: Uuid,
    key: &RequestKey,
) -> Result<Option<Generation>, Problem> {
    let g = generations::get_by_key(
        &**st.db.get().await.map_err(Error::from)?,
        user_id,
        &key.key,
    )
    .await?;
    match g {
        Some(g) if g.request_hash.as_deref() != Some(key.hash.as_str()) => {
            Err(Error::IdempotencyKeyReused.into())
        }
        g => Ok(g),
    }
}

/// The answer to a generate request.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    /// The generation's id (`GET /generate/{id}/status`).
    generation_id: Uuid,
    /// `processing` while open (also while the row is still `pending`).
    status: Status,
    /// Images asked for.
    num_outputs: i32,
    /// `free`: all outputs free; `credits`: some cost credits; `waived`: credits not enforced.
    charge: Charge,
    /// Credits charged: for the outputs delivered only (0 while open).
    credits_used: i32,
    /// Free generations left: as this request's hold left them, else (a replay, a failure) now.
    free_generations_remaining: i32,
    /// 0 to 1, `null` until anything is known, 1 once completed.
    progress: Option<f32>,
    /// When the provider began running it (`null` while queued or booting).
    started_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The first of `images` (absent while there is none).
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<ImageView>,
    /// The images delivered and kept, in output order (empty until completed).
    images: Vec<ImageView>,
    /// Why it failed; absent unless it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorView>,
}

/// The answer to a generate request: 201 completed, 202 still running, 200 failed or cancelled.
/// `hold` is the hold this request took (absent when answering with an earlier generation).
async fn answer(st: &AppState, g: &Generation, hold: Option<&Hold>) -> Result<Response, Problem> {
    let view = super::views::generation(st, g).await?;
    let (code, status) = match g.status {
        Status::Completed => (StatusCode::CREATED, g.status),
        Status::Queued | Status::Pending | Status::Processing => {
            (StatusCode::ACCEPTED, Status::Processing)
        }
        Status::Failed | Status::Cancelled => (StatusCode::OK, g.status),
    };
    // What remained when this generation took its hold (parallel requests each see their
    // own step of 3 → 2 → 1 → 0); a released hold reports the count after the release.
    let free_generations_remaining = match hold {
        Some(h) if code != StatusCode::OK => h.free_remaining,
        _ => view.free_generations_remaining,
    };
    let out = Answer {
        generation_id: g.id,
        status,
        num_outputs: view.num_outputs,
        charge: view.charge,
        credits_used: view.credits_used,
        free_generations_remaining,
        progress: view.progress,
        started_at: view.started_at,
        image: view.image,
        images: view.images,
        error: view.error,
    };
    Ok(web::json(code, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::text;
    use serde_json::json;

    fn fields(p: Problem) -> Vec<String> {
        p.error_fields()
    }

    #[test]
    fn lists_every_problem_at_once() {
        let body = json!({"prompt": "", "modelId": "nope", "width": 99999, "steps": 0, "guidanceScale": 31,
                          "sourceImageUrl": "http://example.com/a.png", "waitForResult": "yes", "bogus": 1});
        let mut got = fields(parse(&body).unwrap_err());
        got.sort();
        let mut want = [
            "bogus",
            "guidanceScale",
            "modelId",
            "prompt",
            "sourceImageUrl",
            "steps",
            "waitForResult",
            "width",
        ];
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn missing_and_overlong_prompt() {
        assert_eq!(fields(parse(&json!({})).unwrap_err()), ["prompt"]);
        assert_eq!(
            fields(parse(&json!({"prompt": null})).unwrap_err()),
            ["prompt"]
        );
        assert_eq!(
            fields(parse(&json!({"prompt": "x".repeat(10_001)})).unwrap_err()),
            ["prompt"]
        );
        assert_eq!(
            fields(parse(&json!({"prompt": "   "})).unwrap_err()),
            ["prompt"]
        );
        assert_eq!(fields(parse(&json!([1])).unwrap_err()), ["body"]);
    }

    #[test]
    fn control_characters_are_refused_but_free_text_keeps_line_breaks() {
        let body = json!({"prompt": "a\u{0}b", "negativePrompt": "\u{1b}[31m", "style": "x\u{7f}",
                          "modelId": "\u{0}", "modelVersion": "v1\t", "sourceImageUrl": "https://93.184.216.34/\n"});
        let p = parse(&body).unwrap_err();
        let mut got = fields(p.clone());
        got.sort();
        assert_eq!(
            got,
            [
                "modelId",
                "modelVersion",
                "negativePrompt",
                "prompt",
                "sourceImageUrl",
                "style"
            ]
        );
        assert!(
            p.body()["errors"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["message"] == text::CONTROL)
        );
        let r = parse(
            &json!({"prompt": "a cat\r\n\tsitting", "negativePrompt": "dogs\n", "style": "oil\t"}),
        )
        .unwrap();
        assert_eq!(r.prompt, "a cat\r\n\tsitting");
    }

    #[test]
    fn source_image_id_is_a_uuid_and_excludes_source_image_url() {
        let id = Uuid::new_v4();
        let r = parse(&json!({"prompt": "a cat", "sourceImageId": id})).unwrap();
        assert_eq!(r.source_image_id, Some(id));
        assert_eq!(
            fields(parse(&json!({"prompt": "a cat", "sourceImageId": "x"})).unwrap_err()),
            ["sourceImageId"]
        );
        let both = json!({"prompt": "a cat", "sourceImageId": id,
                          "sourceImageUrl": "https://93.184.216.34/a.png"});
        assert_eq!(fields(parse(&both).unwrap_err()), ["sourceImageId"]);
    }

    #[test]
    fn accepts_a_full_request() {
        let r = parse(&json!({"prompt": "a cat", "modelId": Uuid::nil(), "width": 512, "height": 768, "steps": 4,
                              "guidanceScale": 3.5, "seed": 42, "generationStrength": 0.5, "style": "oil",
                              "waitForResult": true}))
        .unwrap();
        assert_eq!(
            (r.width, r.height, r.seed, r.wait_for_result),
            (Some(512), Some(768), Some(42), true)
        );
    }
}
