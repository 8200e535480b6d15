//! An output's bytes: a `data:` URI's payload, or downloaded from a URL that
//! [`UrlPolicy::provider_outputs`] allows, at most `MAX_OUTPUT_BYTES` either
//! way and within [`DOWNLOAD_TIMEOUT`]. Imports `url_policy` and the HTTP
//! client; no S3 here.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD};

use super::StorageError;
use crate::{Config, http_client::HttpClient, otel::http::SendTraced, url_policy::UrlPolicy};

const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Where outputs may come from, and how large they may be.
#[derive(Debug)]
pub(super) struct Outputs {
    http: HttpClient,
    policy: UrlPolicy,
    /// `MAX_OUTPUT_BYTES`: also the most [`super::Storage::read`] reads.
    pub(super) max_bytes: usize,
}

impl Outputs {
    pub(super) fn new(cfg: &Config, http: HttpClient) -> Self {
        Outputs {
            http,
            policy: UrlPolicy::provider_outputs(&cfg.output_allowed_hosts),
            max_bytes: cfg.max_output_bytes,
        }
    }

    /// The bytes of `source`: an output's `data:` URI or URL.
    pub(super) async fn fetch(&self, source: &str) -> Result<Vec<u8>, StorageError> {
        match source.strip_prefix("data:") {
            Some(data) => decode_data_uri(data, self.max_bytes),
            None => self.download(source).await,
        }
    }

    async fn download(&self, source: &str) -> Result<Vec<u8>, StorageError> {
        let url = self
            .policy
            .check(source)
            .map_err(|refused| StorageError::Disallowed(refused.to_string()))?;
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
}

/// Decodes the part of a `data:` URI after the scheme, at most `max_bytes`
/// (a payload that cannot fit is refused before it is decoded).
fn decode_data_uri(data: &str, max_bytes: usize) -> Result<Vec<u8>, StorageError> {
    let (meta, payload) = data.split_once(',').ok_or(StorageError::NotAnImage)?;
    if payload.len() > max_bytes.div_ceil(3) * 4 + 4 {
        return Err(StorageError::TooLarge(max_bytes));
    }
    if !meta.ends_with(";base64") {
        return Err(StorageError::NotAnImage);
    }
    let bytes = STANDARD
        .decode(payload.trim())
        .map_err(|_| StorageError::NotAnImage)?;
    match bytes.len() > max_bytes {
        true => Err(StorageError::TooLarge(max_bytes)),
        false => Ok(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // 8 bytes pass the payload's length check for a limit of 7, not the decoded one.
        assert!(matches!(
            decode_data_uri(&format!("image/png;base64,{png}"), 7),
            Err(StorageError::TooLarge(7))
        ));
        assert!(matches!(
            decode_data_uri("image/png,raw", 1024),
            Err(StorageError::NotAnImage)
        ));
    }
}
