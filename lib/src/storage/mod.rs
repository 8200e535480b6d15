//! The images bucket ([`Storage`]): provider outputs copied in
//! (`users/{userId}/images/{generationId}.{ext}`, [`Storage::copy_output`]),
//! their thumbnails, uploads and exports. In three parts: `s3`, the bucket's
//! calls (put, read, copy, list, delete, presigned and CDN URLs); `keys`, where
//! each object goes and what a key names; `fetch`, an output's bytes, from a
//! `data:` URI or a download that `url_policy` allows.
//!
//! May import `media`, `url_policy`, `http_client`, `aws`, `otel` and
//! `config`; nothing of the domain or the edge.

mod fetch;
mod keys;
mod s3;

use std::time::Duration;

use aws_sdk_s3::Client;
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::{Config, media};

pub use keys::ImageKey;
pub use s3::Head;

/// An output stored in the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// Its object key.
    pub key: String,
    /// Its format as an extension (`png`, `jpg`, `webp`, `gif`, `svg`), sniffed from its bytes.
    pub format: String,
    /// Its size in bytes.
    pub size: i64,
    /// Width in pixels, read from the file.
    pub width: i32,
    /// Height in pixels, read from the file.
    pub height: i32,
}

/// Why an object could not be copied, signed or deleted.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The output's URL is not one `url_policy` allows (its scheme, host or address).
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
    /// Larger than `MAX_OUTPUT_BYTES` (the limit given).
    #[error("output exceeds {0} bytes")]
    TooLarge(usize),
    /// Not a PNG, JPEG, WebP, GIF or SVG (or a malformed `data:` URI).
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
    outputs: fetch::Outputs,
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
            outputs: fetch::Outputs::new(cfg, http),
        }
    }

    /// Fetches `source` (an output's URL or `data:` URI) and stores it as the
    /// generation's output `index`. A download is passed on as it arrives
    /// (within the S3 attempt's 10 s); should that upload fail, the output is
    /// fetched again, whole (within 30 s), and sent with the SDK's retries.
    pub async fn copy_output(
        &self,
        source: &str,
        user_id: Uuid,
        generation_id: Uuid,
        index: i32,
    ) -> Result<StoredObject, StorageError> {
        let mut stream = true;
        loop {
            let fetched = self.outputs.fetch(source, stream).await?;
            let head = fetched.head();
            let (format, mime) = media::sniff(head).ok_or(StorageError::NotAnImage)?;
            let (width, height) = media::dimensions(head).ok_or(StorageError::NotAnImage)?;
            let key = Self::key(user_id, generation_id, index, format);
            let size = fetched.len() as i64;
            let streamed = matches!(fetched, fetch::Fetched::Streaming { .. });
            let checksum = match streamed {
                true => s3::Checksum::None,
                false => s3::Checksum::Crc32,
            };
            match self
                .put_body(&key, mime, fetched.into_body(), checksum)
                .await
            {
                Err(e) if streamed => {
                    tracing::warn!(%generation_id, index, error = %e, "streamed copy failed; copying whole");
                    stream = false;
                }
                put => {
                    return put.map(|()| StoredObject {
                        key,
                        format: format.to_string(),
                        size,
                        width,
                        height,
                    });
                }
            }
        }
    }
}
