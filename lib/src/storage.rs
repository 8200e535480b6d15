//! Image objects in S3: copying a provider output (an `https:` URL from an
//! allowed host, or a `data:` URI) into `users/{userId}/images/{generationId}.{ext}`,
//! thumbnails beside it (`{generationId}.thumb.webp`), image URLs (presigned
//! GET or CDN), reading, listing and deletion.

use std::time::Duration;

use aws_sdk_s3::{
    Client, operation::get_object::GetObjectOutput, presigning::PresigningConfig,
    primitives::ByteStream,
};
use base64::{Engine, engine::general_purpose::STANDARD};
use bytes::Bytes;
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::Config;
use crate::otel::{
    aws::{AwsSpans, Resource},
    http::SendTraced,
};

const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// An output stored in the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub key: String,
    pub format: String,
    pub size: i64,
    pub width: i32,
    pub height: i32,
}

/// Why an object could not be copied, signed or deleted.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("output host not allowed: {0}")]
    Disallowed(String),
    /// The output host answered 404 or 410: the provider deleted the output.
    #[error("output gone ({0})")]
    Gone(u16),
    /// The output host refused the download with another 4xx.
    #[error("output download refused ({0})")]
    Refused(u16),
    /// No answer, a dropped connection, a timeout, a 5xx or throttling.
    #[error("output download failed: {0}")]
    Download(String),
    #[error("output exceeds {0} bytes")]
    TooLarge(usize),
    #[error("output is not a supported image")]
    NotAnImage,
    /// An S3 call failed (a timeout, a 5xx, a refused connection, or a refusal).
    #[error("s3: {0}")]
    Upload(String),
}

impl StorageError {
    /// Whether a later attempt may succeed: download and S3 faults pass;
    /// an output that is gone, refused, too large or not an image stays so.
    pub fn is_transient(&self) -> bool {
        matches!(self, StorageError::Download(_) | StorageError::Upload(_))
    }

    fn s3<E: std::error::Error + 'static>(op: &str, e: E) -> Self {
        StorageError::Upload(format!(
            "{op}: {}",
            aws_sdk_s3::error::DisplayErrorContext(e)
        ))
    }
}

/// S3 calls: connect within 2 s, each attempt within 10 s, the whole call (with retries) within 20 s.
fn s3_timeouts() -> aws_sdk_s3::config::timeout::TimeoutConfig {
    aws_sdk_s3::config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_attempt_timeout(Duration::from_secs(10))
        .operation_timeout(Duration::from_secs(20))
        .build()
}

/// The extension of a thumbnail's key (`{generationId}.thumb.webp`).
const THUMBNAIL_EXT: &str = "thumb.webp";

/// What a key under `users/{userId}/images/` names: a generation's image or its thumbnail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageKey {
    pub user_id: Uuid,
    pub generation_id: Uuid,
    pub thumbnail: bool,
}

impl ImageKey {
    /// `users/{userId}/images/{generationId}.{rest}`; `None` if the key is not under an
    /// images prefix at all, `Some(Err(()))` if it is but does not have that shape.
    pub fn parse(key: &str) -> Option<Result<ImageKey, ()>> {
        let rest = key.strip_prefix("users/")?;
        let (user, file) = rest.split_once("/images/")?;
        let parsed = file
            .split_once('.')
            .filter(|(_, ext)| !ext.is_empty() && !ext.contains('/'))
            .and_then(|(g, ext)| {
                Some(ImageKey {
                    user_id: Uuid::parse_str(user).ok()?,
                    generation_id: Uuid::parse_str(g).ok()?,
                    thumbnail: ext.ends_with(THUMBNAIL_EXT),
                })
            });
        Some(parsed.ok_or(()))
    }
}

/// The images bucket and the rules for what may go into it.
#[derive(Debug)]
pub struct Storage {
    sdk: crate::aws::AwsConfig,
    client: OnceCell<Client>,
    bucket: String,
    force_path_style: bool,
    public_base_url: Option<String>,
    presign_ttl: Duration,
    http: crate::http_client::HttpClient,
    allowed_hosts: Vec<String>,
    max_bytes: usize,
}

impl Storage {
    /// `sdk`: the AWS settings its client is built from on first use.
    pub fn new(
        cfg: &Config,
        http: crate::http_client::HttpClient,
        sdk: crate::aws::AwsConfig,
    ) -> Self {
        Storage {
            sdk,
            client: OnceCell::new(),
            bucket: cfg.images_bucket.clone(),
            force_path_style: cfg.s3_force_path_style,
            public_base_url: cfg.images_public_base_url.clone(),
            presign_ttl: cfg.presign_ttl,
            http,
            allowed_hosts: cfg.output_allowed_hosts.clone(),
            max_bytes: cfg.max_output_bytes,
        }
    }

    /// The S3 client, built on first use.
    pub async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| async {
                let sdk = self.sdk.get().await;
                let mut conf = aws_sdk_s3::config::Builder::from(&sdk)
                    .force_path_style(self.force_path_style)
                    .timeout_config(s3_timeouts());
                if crate::otel::enabled() {
                    conf = conf.interceptor(AwsSpans(Resource::Bucket(self.bucket.clone())));
                }
                Client::from_conf(conf.build())
            })
            .await
    }

    /// The object key of a generation's output `index` (0 for the first):
    /// `{generationId}.{ext}`, then `{generationId}.{index}.{ext}`.
    pub fn key(user_id: Uuid, generation_id: Uuid, index: i32, ext: &str) -> String {
        match index {
            0 => format!("users/{user_id}/images/{generation_id}.{ext}"),
            i => format!("users/{user_id}/images/{generation_id}.{i}.{ext}"),
        }
    }

    /// The object key of the thumbnail of the image stored at `image_key`
    /// (its extension replaced: `{generationId}[.{index}].thumb.webp`).
    pub fn thumbnail_key(image_key: &str) -> String {
        let stem = image_key.rsplit_once('.').map_or(image_key, |(s, _)| s);
        format!("{stem}.{THUMBNAIL_EXT}")
    }

    /// Downloads `source` and stores it as the generation's output `index`.
    pub async fn copy_output(
        &self,
        source: &str,
        user_id: Uuid,
        generation_id: Uuid,
        index: i32,
    ) -> Result<StoredObject, StorageError> {
        let bytes = Bytes::from(match source.strip_prefix("data:") {
            Some(data) => decode_data_uri(data, self.max_bytes)?,
            None => self.download(source).await?,
        });
        let (format, mime) = sniff(&bytes).ok_or(StorageError::NotAnImage)?;
        let (width, height) = dimensions(&bytes).ok_or(StorageError::NotAnImage)?;
        let key = Self::key(user_id, generation_id, index, format);
        let size = bytes.len() as i64;
        self.put(&key, mime, bytes).await?;
        Ok(StoredObject {
            key,
            format: format.to_string(),
            size,
            width,
            height,
        })
    }

    /// Stores `bytes` at `key`. SVG is served as an attachment: opened from its
    /// URL, its scripts never run on the bucket's origin (an `<img>` still shows it).
    pub async fn put(&self, key: &str, mime: &str, bytes: Bytes) -> Result<(), StorageError> {
        let mut put = self
            .client()
            .await
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(mime);
        if mime == SVG_MIME {
            put = put.content_disposition("attachment");
        }
        put.body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| StorageError::s3("put", e))?;
        Ok(())
    }

    /// Stores the contents of `file` at `key`, read from the file as it is
    /// sent (never whole in memory).
    pub async fn put_file(
        &self,
        key: &str,
        mime: &str,
        file: std::fs::File,
    ) -> Result<(), StorageError> {
        let body = ByteStream::read_from()
            .file(tokio::fs::File::from_std(file))
            .build()
            .await
            .map_err(|e| StorageError::Upload(format!("read {key}: {e}")))?;
        self.client()
            .await
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(mime)
            .body(body)
            .send()
            .await
            .map_err(|e| StorageError::s3("put", e))?;
        Ok(())
    }

    /// An object's bytes, at most `MAX_OUTPUT_BYTES`; `None` if there is no such object.
    pub async fn read(&self, key: &str) -> Result<Option<Bytes>, StorageError> {
        let Some(obj) = self.get(key, None).await? else {
            return Ok(None);
        };
        if obj
            .content_length()
            .is_some_and(|n| n as usize > self.max_bytes)
        {
            return Err(StorageError::TooLarge(self.max_bytes));
        }
        Ok(Some(collect(obj).await?))
    }

    /// The first `max` bytes of an object, its whole length and its ETag; `None`
    /// if there is no such object.
    pub async fn read_head(&self, key: &str, max: u64) -> Result<Option<Head>, StorageError> {
        let range = format!("bytes=0-{}", max.saturating_sub(1));
        let Some(obj) = self.get(key, Some(range)).await? else {
            return Ok(None);
        };
        // `Content-Range: bytes 0-N/TOTAL` when the object is longer than the range.
        let total = obj
            .content_range()
            .and_then(|r| r.rsplit_once('/'))
            .and_then(|(_, t)| t.parse().ok());
        let etag = obj.e_tag().map(str::to_string);
        let body = collect(obj).await?;
        let total = total.unwrap_or(body.len() as u64);
        Ok(Some(Head {
            bytes: body.slice(..body.len().min(max as usize)),
            total,
            etag,
        }))
    }

    /// Copies `from` to `to` within the bucket, only if `from` still has `etag`
    /// (when given). `Ok(false)`: it changed (or went away) meanwhile.
    pub async fn copy_if_unchanged(
        &self,
        from: &str,
        to: &str,
        etag: Option<&str>,
    ) -> Result<bool, StorageError> {
        let copied = self
            .client()
            .await
            .copy_object()
            .bucket(&self.bucket)
            .copy_source(format!("{}/{from}", self.bucket))
            .set_copy_source_if_match(etag.map(str::to_string))
            .key(to)
            .send()
            .await;
        match copied {
            Ok(_) => Ok(true),
            Err(e)
                if e.raw_response()
                    .is_some_and(|r| matches!(r.status().as_u16(), 404 | 412)) =>
            {
                Ok(false)
            }
            Err(e) => Err(StorageError::s3("copy", e)),
        }
    }

    /// GetObject of `key` (of a byte `range`, if given); `None` if there is no such object.
    async fn get(
        &self,
        key: &str,
        range: Option<String>,
    ) -> Result<Option<GetObjectOutput>, StorageError> {
        let got = self
            .client()
            .await
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_range(range)
            .send()
            .await;
        match got {
            Ok(obj) => Ok(Some(obj)),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => Ok(None),
            // A range of an empty object: it has no byte 0.
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 416) => {
                Ok(Some(GetObjectOutput::builder().build()))
            }
            Err(e) => Err(StorageError::s3("get", e)),
        }
    }

    async fn download(&self, source: &str) -> Result<Vec<u8>, StorageError> {
        let url = url::Url::parse(source)
            .map_err(|_| StorageError::Disallowed("unparseable URL".into()))?;
        if !self.host_allowed(&url) {
            return Err(StorageError::Disallowed(
                url.host_str().unwrap_or_default().to_string(),
            ));
        }
        let mut res = self
            .http
            .get()
            .get(url)
            .timeout(DOWNLOAD_TIMEOUT)
            .send_traced("output")
            .await
            .map_err(|e| StorageError::Download(e.without_url().to_string()))?;
        match res.status().as_u16() {
            200..=299 => {}
            code @ (404 | 410) => return Err(StorageError::Gone(code)),
            code @ (408 | 429 | 500..) => {
                return Err(StorageError::Download(format!("status {code}")));
            }
            code => return Err(StorageError::Refused(code)),
        }
        let declared = res.content_length().map(|n| n as usize);
        if declared.is_some_and(|n| n > self.max_bytes) {
            return Err(StorageError::TooLarge(self.max_bytes));
        }
        // Sized once when the length is known: a growing buffer would briefly hold twice as much.
        let mut bytes = Vec::with_capacity(declared.unwrap_or(0));
        while let Some(chunk) = res
            .chunk()
            .await
            .map_err(|e| StorageError::Download(e.without_url().to_string()))?
        {
            if bytes.len() + chunk.len() > self.max_bytes {
                return Err(StorageError::TooLarge(self.max_bytes));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }

    /// `replicate.delivery` and its subdomains over https, or a configured `host[:port]`.
    fn host_allowed(&self, url: &url::Url) -> bool {
        let Some(host) = url.host_str() else {
            return false;
        };
        let replicate = url.scheme() == "https"
            && (host == "replicate.delivery" || host.ends_with(".replicate.delivery"));
        let with_port = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        let configured = matches!(url.scheme(), "https" | "http")
            && self
                .allowed_hosts
                .iter()
                .any(|h| h == &with_port || h == host);
        replicate || configured
    }

    /// A URL the client can download the image from.
    pub async fn url(&self, key: &str) -> Result<String, StorageError> {
        match &self.public_base_url {
            Some(base) => Ok(format!("{base}/{key}")),
            None => self.presign_get(key, self.presign_ttl).await,
        }
    }

    /// A presigned GET of `key`, valid for `ttl`.
    pub async fn presign_get(&self, key: &str, ttl: Duration) -> Result<String, StorageError> {
        let presign =
            PresigningConfig::expires_in(ttl).map_err(|e| StorageError::s3("presign", e))?;
        let req = self
            .client()
            .await
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(presign)
            .await;
        Ok(req
            .map_err(|e| StorageError::s3("presign", e))?
            .uri()
            .to_string())
    }

    /// The tag of every upload, which the bucket's lifecycle rule expires after a day.
    pub const UPLOAD_TAG: &str = "picture-upload=true";

    /// The object key of a user's upload.
    pub fn upload_key(user_id: Uuid, upload_id: Uuid) -> String {
        format!("users/{user_id}/uploads/{upload_id}")
    }

    /// Where a checked upload is copied for the provider to read: a key no
    /// presigned PUT names, so the checked bytes cannot be replaced (the copy
    /// keeps the upload's tag, and expires with it).
    pub fn checked_upload_key(user_id: Uuid, upload_id: Uuid) -> String {
        format!("users/{user_id}/uploads/{upload_id}.checked")
    }

    /// A presigned PUT of `key`, valid for `ttl`, that S3 accepts only with this
    /// `Content-Type` and `Content-Length` and the [`Self::UPLOAD_TAG`] tagging
    /// (all signed headers): its URL and the headers the client must send.
    pub async fn presign_put(
        &self,
        key: &str,
        mime: &str,
        length: i64,
        ttl: Duration,
    ) -> Result<(String, Vec<(String, String)>), StorageError> {
        let presign =
            PresigningConfig::expires_in(ttl).map_err(|e| StorageError::s3("presign", e))?;
        let req = self
            .client()
            .await
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(mime)
            .content_length(length)
            .tagging(Self::UPLOAD_TAG)
            .presigned(presign)
            .await
            .map_err(|e| StorageError::s3("presign", e))?;
        let headers = req
            .headers()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok((req.uri().to_string(), headers))
    }

    /// Calls `each` with the key and last-modified time (Unix seconds) of every
    /// object under `prefix`, a page (up to 1000 keys) at a time.
    pub async fn list(
        &self,
        prefix: &str,
        mut each: impl FnMut(&str, i64),
    ) -> Result<(), StorageError> {
        let mut pages = self
            .client()
            .await
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            for obj in page.map_err(|e| StorageError::s3("list", e))?.contents() {
                if let Some(key) = obj.key() {
                    each(key, obj.last_modified().map_or(0, |t| t.secs()));
                }
            }
        }
        Ok(())
    }

    /// Whether the bucket holds `key` (HeadObject).
    pub async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        let head = self
            .client()
            .await
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        match head {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found()) => Ok(false),
            Err(e) => Err(StorageError::s3("head", e)),
        }
    }

    /// Deletes an object (absent objects are fine).
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.client()
            .await
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| StorageError::s3("delete", e))?;
        Ok(())
    }
}

/// An object's body, read to its end.
async fn collect(obj: GetObjectOutput) -> Result<Bytes, StorageError> {
    let body = obj.body.collect().await;
    Ok(body
        .map_err(|e| StorageError::Upload(format!("get: {e}")))?
        .into_bytes())
}

/// The first bytes of an object, as [`Storage::read_head`] read them.
#[derive(Debug, Clone)]
pub struct Head {
    pub bytes: Bytes,
    /// The whole object's length.
    pub total: u64,
    pub etag: Option<String>,
}

/// Decodes the part of a `data:` URI after the scheme.
fn decode_data_uri(data: &str, max_bytes: usize) -> Result<Vec<u8>, StorageError> {
    let (meta, payload) = data.split_once(',').ok_or(StorageError::NotAnImage)?;
    if payload.len() > max_bytes.div_ceil(3) * 4 + 4 {
        return Err(StorageError::TooLarge(max_bytes));
    }
    if !meta.ends_with(";base64") {
        return Err(StorageError::NotAnImage);
    }
    STANDARD
        .decode(payload.trim())
        .map_err(|_| StorageError::NotAnImage)
}

const SVG_MIME: &str = "image/svg+xml";

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

/// Width and height in pixels: from the header, or an SVG's `width`/`height`
/// (else its `viewBox`).
fn dimensions(bytes: &[u8]) -> Option<(i32, i32)> {
    if let Ok(size) = imagesize::blob_size(bytes) {
        return Some((size.width as i32, size.height as i32));
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

    fn storage(hosts: &[&str]) -> Storage {
        let mut vars: std::collections::HashMap<String, String> = [
            ("DATABASE_URL", "postgres://x/y"),
            ("IMAGES_BUCKET", "b"),
            ("REPLICATE_API_TOKEN", "t"),
            ("JWKS_URL", "http://j"),
            ("JWT_ISSUER", "i"),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
        vars.insert("OUTPUT_ALLOWED_HOSTS".into(), hosts.join(","));
        Storage::new(
            &Config::from_map(&vars).unwrap(),
            crate::http_client::HttpClient::default(),
            crate::aws::AwsConfig::default(),
        )
    }

    #[test]
    fn only_replicate_delivery_and_configured_hosts() {
        let s = storage(&["127.0.0.1:5100"]);
        let ok = |u: &str| s.host_allowed(&url::Url::parse(u).unwrap());
        assert!(ok("https://replicate.delivery/x.png"));
        assert!(ok("https://pbxt.replicate.delivery/x.png"));
        assert!(!ok("http://pbxt.replicate.delivery/x.png"));
        assert!(!ok("https://evilreplicate.delivery/x.png"));
        assert!(ok("http://127.0.0.1:5100/files/a.png"));
        assert!(!ok("http://127.0.0.1:5101/files/a.png"));
        assert!(!ok("http://169.254.169.254/latest/meta-data"));
    }

    #[test]
    fn data_uris_are_decoded_and_capped() {
        let png = STANDARD.encode(b"\x89PNG\r\n\x1a\n");
        assert_eq!(
            decode_data_uri(&format!("image/png;base64,{png}"), 1024).unwrap(),
            b"\x89PNG\r\n\x1a\n"
        );
        assert!(matches!(
            decode_data_uri(&format!("image/png;base64,{png}"), 2),
            Err(StorageError::TooLarge(2))
        ));
        assert!(matches!(
            decode_data_uri("image/png,raw", 1024),
            Err(StorageError::NotAnImage)
        ));
    }

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

    #[test]
    fn keys_are_deterministic() {
        let (u, g) = (Uuid::nil(), Uuid::max());
        assert_eq!(
            Storage::key(u, g, 0, "png"),
            format!("users/{u}/images/{g}.png")
        );
        assert_eq!(
            Storage::key(u, g, 2, "webp"),
            format!("users/{u}/images/{g}.2.webp")
        );
        assert_eq!(
            Storage::thumbnail_key(&Storage::key(u, g, 0, "png")),
            format!("users/{u}/images/{g}.thumb.webp")
        );
        assert_eq!(
            Storage::thumbnail_key(&Storage::key(u, g, 3, "jpg")),
            format!("users/{u}/images/{g}.3.thumb.webp")
        );
    }
}
