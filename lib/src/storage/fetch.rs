//! An output's bytes: a `data:` URI's payload, or downloaded from a URL that
//! [`UrlPolicy::provider_outputs`] allows, at most `MAX_OUTPUT_BYTES` either
//! way and within [`DOWNLOAD_TIMEOUT`]. A download of a known length can be
//! [`Fetched::Streaming`]: read only as far as its format and pixel size
//! (`media`), the rest passed on to S3 as it arrives, so that the download
//! and the upload overlap. Imports `url_policy`, `media` and the HTTP client;
//! no S3 call here.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use aws_sdk_s3::primitives::ByteStream;
use base64::{Engine, engine::general_purpose::STANDARD};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::StorageError;
use crate::{
    Config, http_client::HttpClient, media, otel::http::SendTraced, url_policy::UrlPolicy,
};

const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// How far a download is read for its format and pixel size before it is
/// read whole instead of streamed (a JPEG's size lies behind its metadata).
const HEAD_BYTES: usize = 256 * 1024;

/// Where outputs may come from, and how large they may be.
#[derive(Debug)]
pub(super) struct Outputs {
    http: HttpClient,
    policy: UrlPolicy,
    /// `MAX_OUTPUT_BYTES`: also the most [`super::Storage::read`] reads.
    pub(super) max_bytes: usize,
}

/// An output's bytes: all of them, or the head of a download with the rest
/// still to come.
#[derive(Debug)]
pub(super) enum Fetched {
    /// Every byte, in memory.
    Whole(Bytes),
    /// The first bytes, enough for `media::sniff` and `media::dimensions`,
    /// and the download that carries the rest, `len` bytes in all.
    Streaming {
        head: Bytes,
        rest: reqwest::Response,
        len: u64,
    },
}

impl Fetched {
    /// The bytes at hand: the whole output, or its head.
    pub(super) fn head(&self) -> &[u8] {
        match self {
            Fetched::Whole(bytes) | Fetched::Streaming { head: bytes, .. } => bytes,
        }
    }

    /// The output's length in bytes.
    pub(super) fn len(&self) -> u64 {
        match self {
            Fetched::Whole(bytes) => bytes.len() as u64,
            Fetched::Streaming { len, .. } => *len,
        }
    }

    /// The output as a request body of a known length. A streaming one can be
    /// sent once: the SDK does not retry it.
    pub(super) fn into_body(self) -> ByteStream {
        match self {
            Fetched::Whole(bytes) => ByteStream::from(bytes),
            Fetched::Streaming { head, rest, len } => ByteStream::from_body_1_x(Prefixed {
                head: Some(head),
                rest: reqwest::Body::from(rest),
                remaining: len,
            }),
        }
    }
}

impl Outputs {
    pub(super) fn new(cfg: &Config, http: HttpClient) -> Self {
        Outputs {
            http,
            policy: UrlPolicy::provider_outputs(&cfg.output_allowed_hosts),
            max_bytes: cfg.max_output_bytes,
        }
    }

    /// The bytes of `source`, an output's `data:` URI or URL; with `stream`, a
    /// download of a known length may come as [`Fetched::Streaming`].
    pub(super) async fn fetch(&self, source: &str, stream: bool) -> Result<Fetched, StorageError> {
        match source.strip_prefix("data:") {
            Some(data) => decode_data_uri(data, self.max_bytes).map(|b| Fetched::Whole(b.into())),
            None => self.download(source, stream).await,
        }
    }

    async fn download(&self, source: &str, stream: bool) -> Result<Fetched, StorageError> {
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
        let mut streamable = declared.filter(|_| stream);
        // Sized once when the length is known: a growing buffer would briefly hold twice as much.
        let mut bytes = Vec::with_capacity(match streamable {
            Some(n) => n.min(HEAD_BYTES),
            None => declared.unwrap_or(0),
        });
        while let Some(chunk) = res
            .chunk()
            .await
            .map_err(|e| StorageError::Download(e.without_url().to_string()))?
        {
            if bytes.len() + chunk.len() > self.max_bytes {
                return Err(StorageError::TooLarge(self.max_bytes));
            }
            bytes.extend_from_slice(&chunk);
            if let Some(len) = streamable.filter(|&n| n > bytes.len()) {
                if media::dimensions(&bytes).is_some() {
                    let len = len as u64;
                    return Ok(Fetched::Streaming {
                        head: bytes.into(),
                        rest: res,
                        len,
                    });
                }
                if bytes.len() >= HEAD_BYTES {
                    // No format and size in its head: read whole, for `copy_output` to judge.
                    bytes.reserve_exact(len - bytes.len());
                    streamable = None;
                }
            }
        }
        Ok(Fetched::Whole(bytes.into()))
    }
}

pin_project_lite::pin_project! {
    /// A download's body after its head was read: the head, then what is
    /// left, with the exact length S3 needs to be told first.
    struct Prefixed {
        head: Option<Bytes>,
        #[pin]
        rest: reqwest::Body,
        remaining: u64,
    }
}

impl Body for Prefixed {
    type Data = Bytes;
    type Error = reqwest::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, reqwest::Error>>> {
        let this = self.project();
        let frame = match this.head.take() {
            Some(head) => Poll::Ready(Some(Ok(Frame::data(head)))),
            None => this.rest.poll_frame(cx),
        };
        if let Poll::Ready(Some(Ok(data))) = &frame {
            let sent = data.data_ref().map_or(0, Bytes::len) as u64;
            *this.remaining = this.remaining.saturating_sub(sent);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
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
