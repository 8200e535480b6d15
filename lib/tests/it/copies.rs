//! An output's copy into the real bucket (s3s-fs) from a download served here
//! over real HTTP: a download of a known length streams into S3 once its
//! format and size are known, byte for byte; one whose size is not in its
//! head is read whole; one cut short is fetched again whole, and a copy that
//! cannot be made leaves no object behind.

use std::{
    io::Cursor,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{body::Body, http::header, response::Response};
use bytes::Bytes;
use picture::{
    AppState, Config,
    state::AwsOverrides,
    storage::{StorageError, StoredObject},
};
use uuid::Uuid;

use crate::common::env;

/// How the test server answers its `n`th request.
#[derive(Clone, Copy)]
enum Answer {
    /// Every byte, with its `Content-Length`.
    Whole,
    /// The full `Content-Length`, then half the body, then the connection dropped.
    CutShort,
}

/// Serves `body` as `mime` at any path, answering the requests in turn as
/// `answers` says (the last one repeated); returns its address and a count
/// of the requests seen.
async fn serve(
    body: Vec<u8>,
    mime: &'static str,
    answers: Vec<Answer>,
) -> (String, Arc<AtomicUsize>) {
    let seen = Arc::new(AtomicUsize::new(0));
    let (body, counter) = (Bytes::from(body), seen.clone());
    let answer = move || {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let sent = match answers[n.min(answers.len() - 1)] {
            Answer::Whole => Body::from(body.clone()),
            // hyper drops the connection when a body ends before its declared length.
            Answer::CutShort => Body::from_stream(futures_util::stream::iter([
                Ok(body.slice(..body.len() / 2)),
                Err(std::io::Error::other("cut short")),
            ])),
        };
        let response = Response::builder()
            .header(header::CONTENT_TYPE, mime)
            .header(header::CONTENT_LENGTH, body.len())
            .body(sent)
            .unwrap();
        async move { response }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let app = axum::Router::new().fallback(answer);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

/// The app's state with outputs allowed from `host` (the test server).
fn state(host: &str) -> AppState {
    let cfg = Config::from_map(&env(&[("OUTPUT_ALLOWED_HOSTS", host)])).unwrap();
    AppState::new(cfg, AwsOverrides::default()).unwrap()
}

/// A PNG of `side`² noise: about `4 × side²` bytes that do not compress.
fn noise_png(side: u32) -> Vec<u8> {
    let mut seed = 0x9e37_79b9_u32;
    let img = image::RgbaImage::from_fn(side, side, |_, _| {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        image::Rgba(seed.to_le_bytes())
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A JPEG whose frame header (its size) comes after `metadata` bytes of APP1
/// segments, as a camera's EXIF and thumbnails put it.
fn jpeg_behind_metadata(metadata: usize) -> Vec<u8> {
    let mut small = Cursor::new(Vec::new());
    image::RgbImage::from_pixel(40, 30, image::Rgb([200, 40, 40]))
        .write_to(&mut small, image::ImageFormat::Jpeg)
        .unwrap();
    let small = small.into_inner();
    let mut out = small[..2].to_vec(); // SOI
    let mut left = metadata;
    while left > 0 {
        let len = left.min(65_000);
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&((len + 2) as u16).to_be_bytes());
        out.extend(std::iter::repeat_n(0x41, len));
        left -= len;
    }
    out.extend_from_slice(&small[2..]);
    out
}

/// Copies `file` from the test server at `host` as output 0 of `generation`.
async fn copy(
    host: &str,
    file: &str,
    (user, generation): (Uuid, Uuid),
) -> (AppState, Result<StoredObject, StorageError>) {
    let st = state(host);
    let url = format!("http://{host}/{file}");
    let copied = st.storage.copy_output(&url, user, generation, 0).await;
    (st, copied)
}

fn new_ids() -> (Uuid, Uuid) {
    (Uuid::new_v4(), Uuid::new_v4())
}

async fn stored_bytes(st: &AppState, key: &str) -> Option<Vec<u8>> {
    st.storage.read(key).await.unwrap().map(|b| b.to_vec())
}

#[tokio::test]
async fn a_large_download_streams_into_the_bucket_byte_for_byte() {
    let png = noise_png(600);
    assert!(png.len() > 1_000_000, "{}", png.len());
    let (host, seen) = serve(png.clone(), "image/png", vec![Answer::Whole]).await;

    let (st, stored) = copy(&host, "out.png", new_ids()).await;
    let stored = stored.unwrap();

    assert_eq!(
        (
            stored.format.as_str(),
            stored.size,
            stored.width,
            stored.height
        ),
        ("png", png.len() as i64, 600, 600)
    );
    assert_eq!(stored_bytes(&st, &stored.key).await, Some(png));
    assert_eq!(seen.load(Ordering::SeqCst), 1, "one download");
}

#[tokio::test]
async fn a_download_whose_size_is_not_in_its_head_is_read_whole() {
    // 300 KB of metadata before the frame header: past what is read before streaming.
    let jpeg = jpeg_behind_metadata(300_000);
    assert_eq!(picture::media::dimensions(&jpeg[..256 * 1024]), None);
    let (host, seen) = serve(jpeg.clone(), "image/jpeg", vec![Answer::Whole]).await;
    let st = state(&host);

    let stored = st
        .storage
        .copy_output(
            &format!("http://{host}/out.jpg"),
            Uuid::new_v4(),
            Uuid::new_v4(),
            0,
        )
        .await
        .unwrap();

    assert_eq!(
        (
            stored.format.as_str(),
            stored.size,
            stored.width,
            stored.height
        ),
        ("jpg", jpeg.len() as i64, 40, 30)
    );
    assert_eq!(stored_bytes(&st, &stored.key).await, Some(jpeg));
    assert_eq!(seen.load(Ordering::SeqCst), 1, "one download");
}

#[tokio::test]
async fn a_streamed_copy_cut_short_is_fetched_again_whole() {
    let png = noise_png(600);
    let answers = vec![Answer::CutShort, Answer::Whole];
    let (host, seen) = serve(png.clone(), "image/png", answers).await;
    let st = state(&host);

    let stored = st
        .storage
        .copy_output(
            &format!("http://{host}/out.png"),
            Uuid::new_v4(),
            Uuid::new_v4(),
            0,
        )
        .await
        .unwrap();

    assert_eq!(
        seen.load(Ordering::SeqCst),
        2,
        "the download was made again"
    );
    assert_eq!(stored.size, png.len() as i64);
    assert_eq!(stored_bytes(&st, &stored.key).await, Some(png));
}

#[tokio::test]
async fn a_download_always_cut_short_fails_transiently_and_stores_nothing() {
    let png = noise_png(600);
    let (host, seen) = serve(png, "image/png", vec![Answer::CutShort]).await;
    let (user, generation) = new_ids();

    let (st, copied) = copy(&host, "out.png", (user, generation)).await;
    let failed = copied.unwrap_err();

    assert!(
        matches!(failed, StorageError::Download(_)) && failed.is_transient(),
        "{failed:?}"
    );
    assert_eq!(
        seen.load(Ordering::SeqCst),
        2,
        "streamed once, then whole once"
    );
    let key = picture::storage::Storage::key(user, generation, 0, "png");
    assert_eq!(stored_bytes(&st, &key).await, None, "no object at {key}");
}
