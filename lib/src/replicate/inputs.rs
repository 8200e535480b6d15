//! Per-model Replicate inputs (docs/models.md, "Inputs per family"): each
//! model family names its parameters differently; this module maps one
//! request onto them.

use serde_json::{Map, Value, json};

/// What the user asked for, with the model's defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Params<'a> {
    /// The prompt (with the style appended).
    pub prompt: &'a str,
    /// What to keep out of the image, for models that take it.
    pub negative_prompt: Option<&'a str>,
    /// Width in pixels; aspect-ratio models render the nearest ratio.
    pub width: i32,
    /// Height in pixels; aspect-ratio models render the nearest ratio.
    pub height: i32,
    /// Inference steps, for models that take them.
    pub steps: i32,
    /// How closely to follow the prompt, for models that take it.
    pub guidance: f64,
    /// The seed; `None`: the provider picks one.
    pub seed: Option<i64>,
    /// The source image's URL, as the provider reads it; `None`: text-to-image.
    pub source_image: Option<&'a str>,
    /// Image-to-image strength, 0 to 1; `None`: 0.8.
    pub strength: Option<f64>,
    /// Outputs asked for (models with `num_outputs`; others make one).
    pub num_outputs: i32,
}

const FLUX_RATIOS: [(i32, i32); 11] = [
    (1, 1),
    (16, 9),
    (21, 9),
    (3, 2),
    (2, 3),
    (4, 5),
    (5, 4),
    (3, 4),
    (4, 3),
    (9, 16),
    (9, 21),
];

fn gcd(a: i32, b: i32) -> i32 {
    if b == 0 {
        a.abs().max(1)
    } else {
        gcd(b, a % b)
    }
}

/// `width:height` reduced by their gcd (1920×1080 → `16:9`).
pub fn ratio(w: i32, h: i32) -> String {
    let g = gcd(w, h);
    format!("{}:{}", w / g, h / g)
}

/// The flux aspect ratio nearest to `w/h` by value.
pub fn nearest_flux_ratio(w: i32, h: i32) -> String {
    let target = f64::from(w) / f64::from(h);
    let (rw, rh) = FLUX_RATIOS
        .iter()
        .min_by(|a, b| {
            let da = (f64::from(a.0) / f64::from(a.1) - target).abs();
            let db = (f64::from(b.0) / f64::from(b.1) - target).abs();
            da.total_cmp(&db)
        })
        .copied()
        .unwrap_or((1, 1));
    format!("{rw}:{rh}")
}

/// The size an aspect-ratio model renders: the shorter side is 1024 px.
pub fn flux_size(w: i32, h: i32) -> (i32, i32) {
    let ratio = nearest_flux_ratio(w, h);
    let (rw, rh) = ratio
        .split_once(':')
        .map(|(a, b)| {
            (
                a.parse::<f64>().unwrap_or(1.0),
                b.parse::<f64>().unwrap_or(1.0),
            )
        })
        .unwrap_or((1.0, 1.0));
    if rw >= rh {
        ((1024.0 * rw / rh).round() as i32, 1024)
    } else {
        (1024, (1024.0 * rh / rw).round() as i32)
    }
}

/// The Replicate `input` object for model `replicate_id` (`owner/name`).
pub fn build(replicate_id: &str, p: &Params) -> Value {
    let id = replicate_id.to_ascii_lowercase();
    let mut m = Map::new();
    m.insert("prompt".into(), json!(p.prompt));
    let mut set = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    let webp = |set: &mut dyn FnMut(&str, Value)| {
        set("output_format", json!("webp"));
        set("output_quality", json!(90));
    };
    let has = |s: &str| id.contains(s);
    let mut seed = true;

    if has("flux-schnell") {
        set("num_inference_steps", json!(p.steps));
        set("guidance", json!(p.guidance));
        set("num_outputs", json!(p.num_outputs));
        set("aspect_ratio", json!(nearest_flux_ratio(p.width, p.height)));
        webp(&mut set);
    } else if has("flux-dev") || has("flux-krea-dev") {
        set("num_inference_steps", json!(p.steps));
        set("guidance_scale", json!(p.guidance));
        set("num_outputs", json!(p.num_outputs));
        set("width", json!(p.width));
        set("height", json!(p.height));
        webp(&mut set);
        if let Some(src) = p.source_image {
            set("image", json!(src));
            set("prompt_strength", json!(1.0 - p.strength.unwrap_or(0.8)));
        }
    } else if has("ideogram") {
        set("aspect_ratio", json!(ratio(p.width, p.height)));
        set("model", json!("turbo"));
        set("style_type", json!("auto"));
    } else if has("imagen") {
        set("aspect_ratio", json!(ratio(p.width, p.height)));
        set("safety_tolerance", json!(2));
        set("output_format", json!("png"));
        seed = false;
    } else if has("sdxl-lightning") {
        set("width", json!(p.width));
        set("height", json!(p.height));
        set("num_inference_steps", json!(4));
        set("guidance_scale", json!(0));
        set("disable_safety_checker", json!(false));
        webp(&mut set);
        if let Some(src) = p.source_image {
            set("image", json!(src));
            set("strength", json!(p.strength.unwrap_or(0.8)));
        }
    } else if has("sdxl") {
        set("width", json!(p.width));
        set("height", json!(p.height));
        set("num_inference_steps", json!(p.steps));
        set("guidance_scale", json!(p.guidance));
        set("refine", json!("expert_ensemble_refiner"));
        set("high_noise_frac", json!(0.8));
        webp(&mut set);
        if let Some(src) = p.source_image {
            set("image", json!(src));
            set("prompt_strength", json!(p.strength.unwrap_or(0.8)));
        }
    } else if has("seedream-4") {
        let size = if p.width.max(p.height) >= 4096 {
            "4K"
        } else if p.width <= 1024 && p.height <= 1024 {
            "1K"
        } else {
            "2K"
        };
        set("size", json!(size));
        set("width", json!(p.width));
        set("height", json!(p.height));
        set("max_images", json!(1));
        set("aspect_ratio", json!(ratio(p.width, p.height)));
        if let Some(src) = p.source_image {
            set("image_input", json!([src]));
        }
        seed = false;
    } else if has("seedream") {
        set("width", json!(p.width));
        set("height", json!(p.height));
        set("num_inference_steps", json!(p.steps));
        set("guidance_scale", json!(p.guidance));
    } else if has("flux-1.1-pro") {
        set("aspect_ratio", json!(ratio(p.width, p.height)));
        webp(&mut set);
        set("safety_tolerance", json!(2));
    } else if has("recraft-v3-svg") {
        set("width", json!(p.width));
        set("height", json!(p.height));
        set("output_format", json!("svg"));
        set("style", json!("vector_illustration"));
    } else if has("recraft") {
        set("size", json!(format!("{}x{}", p.width, p.height)));
        set("style", json!("realistic_image"));
        seed = false;
    } else if has("stable-diffusion-3.5") || has("sd-3-5") {
        set("aspect_ratio", json!(ratio(p.width, p.height)));
        set("cfg", json!(p.guidance));
        set("steps", json!(p.steps));
        webp(&mut set);
    } else if has("qwen") {
        set("aspect_ratio", json!(ratio(p.width, p.height)));
        set("num_inference_steps", json!(p.steps));
        set("guidance", json!(p.guidance));
        set("go_fast", json!(true));
        set("image_size", json!("optimize_for_quality"));
        webp(&mut set);
        set("enhance_prompt", json!(false));
        set("disable_safety_checker", json!(false));
    } else {
        set("width", json!(p.width));
        set("height", json!(p.height));
        set("num_inference_steps", json!(p.steps));
        set("guidance_scale", json!(p.guidance));
        if let Some(src) = p.source_image {
            set("image", json!(src));
        }
    }
    if let (true, Some(s)) = (seed, p.seed) {
        set("seed", json!(s));
    }
    if let Some(n) = p.negative_prompt {
        set("negative_prompt", json!(n));
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Params<'static> {
        Params {
            prompt: "a cat",
            negative_prompt: None,
            width: 1920,
            height: 1080,
            steps: 4,
            guidance: 0.0,
            seed: Some(7),
            source_image: None,
            strength: None,
            num_outputs: 1,
        }
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(1920, 1080), "16:9");
        assert_eq!(ratio(1024, 1024), "1:1");
        assert_eq!(nearest_flux_ratio(1000, 1500), "2:3");
        assert_eq!(nearest_flux_ratio(1440, 256), "21:9");
        assert_eq!(flux_size(1920, 1080), (1820, 1024));
        assert_eq!(flux_size(1024, 1024), (1024, 1024));
    }

    #[test]
    fn flux_schnell_uses_aspect_ratio_and_webp() {
        let v = build("black-forest-labs/flux-schnell", &params());
        assert_eq!(v["aspect_ratio"], "16:9");
        assert_eq!(v["num_inference_steps"], 4);
        assert_eq!(v["output_format"], "webp");
        assert_eq!(v["seed"], 7);
        assert_eq!(v["num_outputs"], 1);
        assert!(v.get("width").is_none());
        let four = Params {
            num_outputs: 4,
            ..params()
        };
        assert_eq!(
            build("black-forest-labs/flux-schnell", &four)["num_outputs"],
            4
        );
    }

    #[test]
    fn seedream_and_fallback_use_width_height() {
        let v = build("bytedance/seedream-3", &params());
        assert_eq!(
            (v["width"].clone(), v["height"].clone()),
            (json!(1920), json!(1080))
        );
        assert_eq!(v["guidance_scale"], 0.0);
        let v = build(
            "someone/unknown-model",
            &Params {
                source_image: Some("https://x/y.png"),
                ..params()
            },
        );
        assert_eq!(v["image"], "https://x/y.png");
        assert_eq!(v["num_inference_steps"], 4);
    }

    #[test]
    fn family_specific_fields() {
        assert_eq!(build("bytedance/seedream-4", &params())["size"], "2K");
        assert_eq!(
            build("recraft-ai/recraft-v3", &params())["size"],
            "1920x1080"
        );
        assert!(build("google/imagen-4", &params()).get("seed").is_none());
        let sd = build("stability-ai/stable-diffusion-3.5-large", &params());
        assert_eq!(
            (sd["cfg"].clone(), sd["steps"].clone()),
            (json!(0.0), json!(4))
        );
        let dev = build(
            "black-forest-labs/flux-dev",
            &Params {
                source_image: Some("s"),
                strength: Some(0.25),
                ..params()
            },
        );
        assert_eq!(dev["prompt_strength"], 0.75);
    }
}
