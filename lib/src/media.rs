//! Image formats, read from the bytes themselves: which format they are (magic
//! numbers, or an SVG document's root element) and how many pixels they hold.
//! Used by `uploads` (a source image), `storage` (an output's key, type and
//! size) and `thumbnail` (what to decode).
//!
//! Imports nothing of this crate.

/// The MIME type of SVG documents.
pub const SVG_MIME: &str = "image/svg+xml";

/// The format (file extension) and MIME type of image bytes, from their magic
/// numbers (an SVG document from its root element).
pub fn sniff(bytes: &[u8]) -> Option<(&'static str, &'static str)> {
    match imagesize::image_type(bytes) {
        Ok(imagesize::ImageType::Png) => Some(("png", "image/png")),
        Ok(imagesize::ImageType::Jpeg) => Some(("jpg", "image/jpeg")),
        Ok(imagesize::ImageType::Webp) => Some(("webp", "image/webp")),
        Ok(imagesize::ImageType::Gif) => Some(("gif", "image/gif")),
        _ => svg_tag(bytes).map(|_| ("svg", SVG_MIME)),
    }
}

/// Width and height in pixels of a raster image, from its header (no SVG).
pub fn raster_size(bytes: &[u8]) -> Option<(usize, usize)> {
    let size = imagesize::blob_size(bytes).ok()?;
    Some((size.width, size.height))
}

/// Width and height in pixels: from the header, or an SVG's `width`/`height`
/// (else its `viewBox`).
pub fn dimensions(bytes: &[u8]) -> Option<(i32, i32)> {
    if let Some((w, h)) = raster_size(bytes) {
        return Some((w as i32, h as i32));
    }
    let tag = svg_tag(bytes)?;
    let number = |v: &str| v.trim().trim_end_matches("px").parse::<f64>().ok();
    let side =
        |v: f64| (v.is_finite() && v >= 1.0 && v <= f64::from(i32::MAX)).then(|| v.round() as i32);
    let sized = attribute(tag, "width")
        .and_then(number)
        .zip(attribute(tag, "height").and_then(number));
    let (w, h) = sized.or_else(|| {
        let view: Vec<f64> = attribute(tag, "viewBox")?
            .split([' ', ','])
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().ok())
            .collect::<Option<_>>()?;
        (view.len() == 4).then(|| (view[2], view[3]))
    })?;
    side(w).zip(side(h))
}

/// The attributes of an SVG document's root `<svg …>` tag, found in its first 4 KiB.
fn svg_tag(bytes: &[u8]) -> Option<&str> {
    let head = &bytes[..bytes.len().min(4096)];
    let text = match std::str::from_utf8(head) {
        Ok(t) => t,
        Err(e) => std::str::from_utf8(&head[..e.valid_up_to()]).ok()?,
    };
    let text = text.trim_start_matches('\u{feff}').trim_start();
    if !text.starts_with('<') {
        return None;
    }
    let start = text.find("<svg")? + 4;
    let rest = &text[start..];
    if !rest.starts_with(|c: char| c.is_whitespace() || c == '>' || c == '/') {
        return None;
    }
    Some(&rest[..rest.find('>')?])
}

/// The value of `name="…"` (or `'…'`) in a tag's attributes.
fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = tag;
    while let Some(at) = rest.find(name) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + name.len()..].trim_start();
        rest = &rest[at + name.len()..];
        if !before.is_some_and(char::is_whitespace) {
            continue;
        }
        let Some(value) = after.strip_prefix('=').map(str::trim_start) else {
            continue;
        };
        let quote = value.chars().next().filter(|q| *q == '"' || *q == '\'')?;
        let value = &value[1..];
        return value.find(quote).map(|end| &value[..end]);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_formats() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n0000"), Some(("png", "image/png")));
        assert_eq!(
            sniff(b"\xFF\xD8\xFF\xE0\x00\x10JFIF\x00\x01"),
            Some(("jpg", "image/jpeg"))
        );
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some(("webp", "image/webp")));
        assert_eq!(sniff(b"<html>not an image"), None);
        assert_eq!(
            sniff(b"<?xml version=\"1.0\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\">"),
            Some(("svg", "image/svg+xml"))
        );
        assert_eq!(sniff(b"<svgx>"), None);
    }

    #[test]
    fn svg_sizes_come_from_width_and_height_or_the_view_box() {
        let size = |s: &str| dimensions(s.as_bytes());
        assert_eq!(
            size(r#"<svg xmlns="http://www.w3.org/2000/svg" width="1024" height="768px">"#),
            Some((1024, 768))
        );
        assert_eq!(
            size(r#"<svg stroke-width="3" viewBox="0 0 640.4 480"><rect width="5"/></svg>"#),
            Some((640, 480))
        );
        assert_eq!(size(r#"<svg width="100%" height="100%">"#), None);
        assert_eq!(size("<svg>"), None);
        assert_eq!(size("\u{feff} <svg width='2' height='3'/>"), Some((2, 3)));
    }
}
