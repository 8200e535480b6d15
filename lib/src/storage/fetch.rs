//! An output's bytes: a `data:` URI's payload, or downloaded from a URL that
//! [`UrlPolicy::provider_outputs`] allows, at most `MAX_OUTPUT_BYTES` either
//! way and within [`DOWNLOAD_TIMEOUT`]. A download of declared length is
//! handed over once its first [`HEAD_BYTES`] are in, the rest still arriving
//! ([`Arriving`]), so that storing it overlaps the download. Imports
//! `url_policy` and the HTTP client; no S3 here.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD};

use super::StorageError;
use crate::{Config, http_client::HttpClient, otel::http::SendTraced, url_policy::UrlPolicy};

const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// What is read of a download before it is handed over: enough for the
/// format and the pixel size of every format `media` knows.
pub(super) const HEAD_BYTES: usize = 64 * 1024;

/// An output as [`Outputs::open`] hands it over.
pub(super) enum Output {
    /// All of it: a `data:` URI, a short download, or one of undeclared length.
    Whole(Vec<u8>),
    /// The first bytes of a download whose length is declared; the rest is still coming.
    Arriving(Arriving),
}

/// A download under way: its first bytes, its declared length and the rest.
pub(super) struct Arriving {
    /// At least [`HEAD_BYTES`] of it.
    pub head: Vec<u8>,
    /// Its declared length, at most `MAX_OUTPUT_BYTES` (HTTP framing holds the body to it).
    pub length: usize,
    rest: reqwest::Response,
}

impl Arriving {
    /// The next chunk of the rest; `None` at the end.
    pub async fn next(&mut self, so_far: usize) -> Result<Option<bytes::Bytes>, StorageError> {
        next_chunk(&mut self.rest, so_far, self.length).await
    }

    /// All of it, read to the end.
    pub async fn finish(mut self) -> Result<Vec<u8>, StorageError> {
        let mut bytes = std::mem::take(&mut self.head);
        // Sized once: a growing buffer would briefly hold twice as much.
        bytes.reserve_exact(self.length.saturating_sub(bytes.len()));
        while let Some(chunk) = self.next(bytes.len()).await? {
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }
}

/// The next chunk of `res`, refused when it would take the body past `max` bytes.
async fn next_chunk(
    res: &mut reqwest::Response,
    so_far: usize,
    max: usize,
) -> Result<Option<bytes::Bytes>, StorageError> {
    let chunk = res
        .chunk()
        .await
        .map_err(|e| StorageError::Download(e.without_url().to_string()))?;
    match chunk {
        Some(c) if so_far + c.len() > max => Err(StorageError::TooLarge(max)),
        chunk => Ok(chunk),
    }
}

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

    /// `source` (an output's `data:` URI or URL): whole, or its head with the rest arriving.
    pub(super) async fn open(&self, source: &str) -> Result<Output, StorageError> {
        match source.strip_prefix("data:") {
            Some(data) => Ok(Output::Whole(decode_data_uri(data, self.max_bytes)?)),
            None => self.download(source).await,
        }
    }

    /// The bytes of `source`, all of them.
    pub(super) async fn fetch(&self, source: &str) -> Result<Vec<u8>, StorageError> {
        match self.open(source).await? {
            Output::Whole(bytes) => Ok(bytes),
            Output::Arriving(a) => a.finish().await,
        }
    }

    async fn download(&self, source: &str) -> Result<Output, StorageError> {
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
        let mut head = Vec::with_capacity(declared.map_or(0, |n| n.min(HEAD_BYTES)));
        let enough = declared.map_or(usize::MAX, |_| HEAD_BYTES);
        while head.len() < enough {
            match next_chunk(&mut res, head.len(), self.max_bytes).await? {
                Some(chunk) => head.extend_from_slice(&chunk),
                None => return Ok(Output::Whole(head)),
            }
        }
        Ok(Output::Arriving(Arriving {
            head,
            length: declared.unwrap_or(self.max_bytes),
            rest: res,
        }))
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
