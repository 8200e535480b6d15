//! The local S3 (s3s-fs) keeps objects on disk: a private instance, killed and
//! started again on the same directory, still serves what was written, and
//! the app's storage lists, heads and deletes through it.

use picture::{AppState, Config, state::AwsOverrides};
use uuid::Uuid;

use crate::{common::env, private::PrivateS3};

const BUCKET: &str = "persistence";

/// The app's state with S3 at the private instance and its own bucket.
async fn state(s3: &PrivateS3) -> AppState {
    let cfg = Config::from_map(&env(&[("IMAGES_BUCKET", BUCKET)])).unwrap();
    let aws = AwsOverrides {
        s3: Some(s3.sdk().await),
        ..Default::default()
    };
    AppState::new(cfg, aws).unwrap()
}

#[tokio::test]
async fn objects_survive_a_restart_of_the_local_s3() {
    let mut server = PrivateS3::start(BUCKET).await;
    let st = state(&server).await;
    let s3 = st.storage.client().await;
    let (user, generation) = (Uuid::new_v4(), Uuid::new_v4());
    let key = picture::storage::Storage::key(user, generation, 0, "png");
    let body = b"\x89PNG\r\n\x1a\nkept across restarts".to_vec();
    s3.put_object()
        .bucket(BUCKET)
        .key(&key)
        .body(body.clone().into())
        .send()
        .await
        .unwrap();

    server.restart().await;

    let url = st.storage.url(&key).await.unwrap();
    let got = reqwest::get(&url).await.unwrap();
    assert_eq!(got.status(), 200, "presigned GET of {key}");
    assert_eq!(got.bytes().await.unwrap(), body);
    let mut listed = Vec::new();
    st.storage
        .list(&format!("users/{user}/"), |k, _| listed.push(k.to_string()))
        .await
        .unwrap();
    assert_eq!(listed, std::slice::from_ref(&key));
    assert!(st.storage.exists(&key).await.unwrap());
    st.storage.delete(&key).await.unwrap();
    assert!(!st.storage.exists(&key).await.unwrap());
}

/// `make test` (and everything else that is not `make dev`) writes into a bucket and a
/// database of its own: what the tests leave behind never shows in the dev store's audit.
#[test]
fn tests_use_a_store_of_their_own() {
    let dev = std::fs::read_to_string(crate::private::root().join(".dev/local.env"))
        .expect("the local stack's settings (.dev/local.env)");
    let setting = |name: &str| {
        dev.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_default()
            .to_string()
    };
    let vars = env(&[]);
    assert_ne!(vars["IMAGES_BUCKET"], setting("IMAGES_BUCKET"));
    assert_ne!(vars["DATABASE_URL"], setting("DATABASE_URL"));
}
