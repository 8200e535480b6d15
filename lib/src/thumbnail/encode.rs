//! Decoding an output and encoding its thumbnail: PNG and JPEG by the `image`
//! crate, WebP by libwebp (which also encodes the thumbnail), the blurhash by
//! `blurhash`. Built only with the `thumbnails` feature.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, ImageReader, RgbImage, RgbaImage};

use super::{BLURHASH_COMPONENTS, LONG_SIDE, MAX_PIXELS, MAX_SIDE, Thumbnail, ThumbnailError};
use crate::media;

/// At most this much memory for one decode (4096² RGBA plus the decoder's own).
const MAX_ALLOC: u64 = 80 << 20;
/// libwebp's quality for thumbnails (0–100): small files, no visible loss at gallery size.
const QUALITY: f32 = 80.0;

/// Decodes `bytes` and makes the thumbnail and its blurhash. CPU-bound: call
/// it off the async executor.
pub fn make(bytes: &[u8]) -> Result<Thumbnail, ThumbnailError> {
    let format = match media::sniff(bytes) {
        Some(("png", _)) => ImageFormat::Png,
        Some(("jpg", _)) => ImageFormat::Jpeg,
        Some(("webp", _)) => ImageFormat::WebP,
        _ => return Err(ThumbnailError::Unsupported),
    };
    let (w, h) = media::raster_size(bytes).ok_or(ThumbnailError::Unsupported)?;
    let (w, h) = (w as u32, h as u32);
    if w > MAX_SIDE || h > MAX_SIDE || u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(ThumbnailError::TooLarge(w, h));
    }
    let decoded = match format {
        ImageFormat::WebP => decode_webp(bytes)?,
        _ => {
            let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
            let mut limits = image::Limits::default();
            limits.max_image_width = Some(MAX_SIDE);
            limits.max_image_height = Some(MAX_SIDE);
            limits.max_alloc = Some(MAX_ALLOC);
            reader.limits(limits);
            reader
                .decode()
                .map_err(|e| ThumbnailError::Decode(e.to_string()))?
        }
    };
    let small = shrink(decoded);
    let (width, height) = (small.width(), small.height());
    let rgba = small.to_rgba8();
    let (cx, cy) = BLURHASH_COMPONENTS;
    let blurhash = blurhash::encode(cx, cy, width, height, rgba.as_raw())
        .map_err(|e| ThumbnailError::Blurhash(e.to_string()))?;
    let encoded = if small.color().has_alpha() {
        webp::Encoder::from_rgba(rgba.as_raw(), width, height).encode_simple(false, QUALITY)
    } else {
        let rgb = small.to_rgb8();
        webp::Encoder::from_rgb(rgb.as_raw(), width, height).encode_simple(false, QUALITY)
    };
    let webp = encoded.map_err(|e| ThumbnailError::Encode(format!("{e:?}")))?;
    Ok(Thumbnail {
        webp: webp.to_vec(),
        width,
        height,
        blurhash,
    })
}

/// Decodes a (still) WebP with libwebp: several times faster than the `image`
/// crate's decoder on detailed lossy images (docs/performance.md).
fn decode_webp(bytes: &[u8]) -> Result<DynamicImage, ThumbnailError> {
    let img = webp::Decoder::new(bytes)
        .decode()
        .ok_or(ThumbnailError::WebP)?;
    let (w, h, pixels) = (img.width(), img.height(), img.to_vec());
    let decoded = if img.is_alpha() {
        RgbaImage::from_raw(w, h, pixels).map(DynamicImage::ImageRgba8)
    } else {
        RgbImage::from_raw(w, h, pixels).map(DynamicImage::ImageRgb8)
    };
    decoded.ok_or(ThumbnailError::WebP)
}

/// The image scaled down to fit [`LONG_SIDE`]², aspect ratio kept; a smaller one as it is.
fn shrink(img: DynamicImage) -> DynamicImage {
    if img.width().max(img.height()) <= LONG_SIDE {
        return img;
    }
    img.thumbnail(LONG_SIDE, LONG_SIDE)
}

#[cfg(test)]
mod tests {
    use image::{ExtendedColorType, ImageEncoder, Rgb, codecs::png::PngEncoder};

    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
        let mut out = Vec::new();
        PngEncoder::new(&mut out)
            .write_image(img.as_raw(), w, h, ExtendedColorType::Rgb8)
            .unwrap();
        out
    }

    fn decoded(t: &Thumbnail) -> DynamicImage {
        decode_webp(&t.webp).unwrap()
    }

    #[test]
    fn the_longer_side_becomes_384_with_the_aspect_ratio_kept() {
        for (w, h, tw, th) in [
            (1024, 1024, 384, 384),
            (1600, 900, 384, 216),
            (600, 1200, 192, 384),
        ] {
            let t = make(&png(w, h)).unwrap();
            assert_eq!((t.width, t.height), (tw, th), "{w}×{h}");
            let img = decoded(&t);
            assert_eq!((img.width(), img.height()), (tw, th));
        }
    }

    #[test]
    fn webp_outputs_are_decoded_too() {
        let (w, h) = (800, 600);
        let rgb = RgbImage::from_fn(w, h, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 40]));
        let lossy = webp::Encoder::from_rgb(rgb.as_raw(), w, h)
            .encode_simple(false, 90.0)
            .unwrap();
        let t = make(&lossy).unwrap();
        assert_eq!((t.width, t.height), (384, 288));
        let img = decoded(&t).to_rgb8();
        // Lossy, but the colours survive: the pixel at (192, 144) came from (400, 300).
        let Rgb([r, g, b]) = *img.get_pixel(192, 144);
        assert!(
            (r as i32 - 144).abs() < 24 && (g as i32 - 44).abs() < 24 && (b as i32 - 40).abs() < 24,
            "{r} {g} {b}"
        );
        assert!(matches!(
            make(&lossy[..lossy.len() / 2]),
            Err(ThumbnailError::WebP)
        ));
    }

    #[test]
    fn small_images_are_not_upscaled() {
        let t = make(&png(200, 100)).unwrap();
        assert_eq!((t.width, t.height), (200, 100));
    }

    #[test]
    fn the_blurhash_has_4_by_3_components() {
        let t = make(&png(512, 256)).unwrap();
        // Size flag: (x − 1) + (y − 1) × 9 = 21 → base83 'L'; 4 + 2 × 11 more characters.
        assert!(t.blurhash.starts_with('L'), "{}", t.blurhash);
        assert_eq!(t.blurhash.len(), 28);
        assert!(blurhash::decode(&t.blurhash, 32, 32, 1.0).is_ok());
    }

    #[test]
    fn other_formats_and_huge_images_are_refused() {
        let svg = br#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>"#;
        assert!(matches!(make(svg), Err(ThumbnailError::Unsupported)));
        assert!(matches!(
            make(b"GIF89a\x01\0\x01\0"),
            Err(ThumbnailError::Unsupported)
        ));
        // A PNG header claiming 5000×10 is refused before anything is decoded.
        let mut huge = png(1, 1);
        huge[16..20].copy_from_slice(&5000u32.to_be_bytes());
        assert!(matches!(
            make(&huge),
            Err(ThumbnailError::TooLarge(5000, 1))
        ));
        // 4096×4096 is within each side's limit but over the pixel budget.
        huge[16..24].copy_from_slice(&[0, 0, 16, 0, 0, 0, 16, 0]);
        assert!(matches!(
            make(&huge),
            Err(ThumbnailError::TooLarge(4096, 4096))
        ));
        let mut truncated = png(64, 64);
        truncated.truncate(60);
        assert!(matches!(make(&truncated), Err(ThumbnailError::Decode(_))));
    }
}
