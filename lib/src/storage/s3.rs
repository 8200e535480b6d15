//! The bucket's calls: put, read (whole, or the head of an object), copy,
//! list, head, delete, and presigned or CDN URLs. Every call is timed out
//! ([`s3_timeouts`]) and traced. Imports `media` (SVG's type) and `otel`.

use std::time::Duration;

use aws_sdk_s3::{
    Client, config::RequestChecksumCalculation, operation::get_object::GetObjectOutput,
    presigning::PresigningConfig, primitives::ByteStream,
};
use bytes::Bytes;

use super::{Storage, StorageError};
use crate::{
    media::SVG_MIME,
    otel::aws::{AwsSpans, Resource},
};

impl StorageError {
    fn s3<E: std::error::Error + 'static>(op: &str, e: E) -> Self {
        StorageError::Upload(format!(
            "{op}: {}",
            aws_sdk_s3::error::DisplayErrorContext(e)
        ))
    }
}

/// What guards a body on its way to S3 besides TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Checksum {
    /// Its CRC32, which S3 verifies: the SDK's default.
    Crc32,
    /// Its length alone: for a download passed on as it arrives, whose CRC32
    /// would have to trail it in `aws-chunked` framing (locally that framing
    /// cost a 1 MB output more than streaming saved).
    None,
}

/// S3 calls: connect within 2 s, each attempt within 10 s, the whole call (with retries) within 20 s.
fn s3_timeouts() -> aws_sdk_s3::config::timeout::TimeoutConfig {
    aws_sdk_s3::config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_attempt_timeout(Duration::from_secs(10))
        .operation_timeout(Duration::from_secs(20))
        .build()
}

impl Storage {
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

    /// Stores `bytes` at `key`.
    pub async fn put(&self, key: &str, mime: &str, bytes: Bytes) -> Result<(), StorageError> {
        self.put_body(key, mime, ByteStream::from(bytes), Checksum::Crc32)
            .await
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
        self.put_body(key, mime, body, Checksum::Crc32).await
    }

    /// Sends `body` to `key`. SVG is served as an attachment: opened from its
    /// URL, its scripts never run on the bucket's origin (an `<img>` still shows
    /// it). The payload is not signed (`UNSIGNED-PAYLOAD`, as AWS's own SDKs send
    /// over HTTPS): hashing it would cost a pass over the body on each side.
    pub(super) async fn put_body(
        &self,
        key: &str,
        mime: &str,
        body: ByteStream,
        checksum: Checksum,
    ) -> Result<(), StorageError> {
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
        let mut put = put.body(body).customize().disable_payload_signing();
        if checksum == Checksum::None {
            put = put.config_override(
                aws_sdk_s3::Config::builder()
                    .request_checksum_calculation(RequestChecksumCalculation::WhenRequired),
            );
        }
        put.send().await.map_err(|e| StorageError::s3("put", e))?;
        Ok(())
    }

    /// An object's bytes, at most `MAX_OUTPUT_BYTES`; `None` if there is no such object.
    pub async fn read(&self, key: &str) -> Result<Option<Bytes>, StorageError> {
        let Some(obj) = self.get(key, None).await? else {
            return Ok(None);
        };
        if obj
            .content_length()
            .is_some_and(|n| n as usize > self.outputs.max_bytes)
        {
            return Err(StorageError::TooLarge(self.outputs.max_bytes));
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

    /// A URL the client can download the image from.
    pub async fn url(&self, key: &str) -> Result<String, StorageError> {
        match &self.public_base_url {
            Some(base) => Ok(format!("{base}/{key}")),
            None => self.presign_get(key, self.presign_ttl).await,
        }
    }

    /// A presigned GET of `key`, valid for `ttl`.
    pub async fn presign_get(&self, key: &str, ttl: Duration) -> Result<String, StorageError> {
        let presign = presigning(ttl)?;
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
        let presign = presigning(ttl)?;
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

/// Presigning of a URL valid for `ttl`.
fn presigning(ttl: Duration) -> Result<PresigningConfig, StorageError> {
    PresigningConfig::expires_in(ttl).map_err(|e| StorageError::s3("presign", e))
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
    /// The first bytes of the object (at most the `max` asked).
    pub bytes: Bytes,
    /// The whole object's length.
    pub total: u64,
    /// The object's ETag, to copy it only if unchanged.
    pub etag: Option<String>,
}
