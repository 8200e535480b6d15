//! The local S3 (s3s-fs) keeps objects on disk: a private instance, killed and
//! started again on the same directory, still serves what was written, and
//! the app's storage lists, heads and deletes through it.

use std::{
    path::Path,
    process::{Child, Command},
    time::Duration,
};

use picture::{AppState, Config, state::AwsOverrides};
use uuid::Uuid;

use crate::common::env;

const BUCKET: &str = "persistence";

/// A running s3s-fs, killed when dropped (also when the test fails).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

/// Starts `s3s-fs` (S3S_FS_BIN, written into .dev/local.env by stack.sh) on `port`
/// over `dir`, and waits until it accepts connections.
async fn start(port: u16, dir: &Path) -> Server {
    let bin = std::env::var("S3S_FS_BIN").expect("S3S_FS_BIN: run the tests with `make test`");
    let server = Server(
        Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", "test", "--secret-key", "test"])
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("s3s-fs did not start on :{port}");
}

/// The app's state with S3 at the private instance and its own bucket.
async fn state(port: u16) -> AppState {
    let sdk = aws_config::from_env()
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .load()
        .await;
    let cfg = Config::from_map(&env(&[("IMAGES_BUCKET", BUCKET)])).unwrap();
    let aws = AwsOverrides {
        s3: Some(sdk),
        ..Default::default()
    };
    AppState::new(cfg, aws).unwrap()
}

#[tokio::test]
async fn objects_survive_a_restart_of_the_local_s3() {
    let dir = std::env::temp_dir().join(format!("picture-s3-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = start(port, &dir).await;
    let st = state(port).await;
    let s3 = st.storage.client().await;
    let location = aws_sdk_s3::types::BucketLocationConstraint::from("eu-central-1");
    s3.create_bucket()
        .bucket(BUCKET)
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(location)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let (user, generation) = (Uuid::new_v4(), Uuid::new_v4());
    let key = picture::storage::Storage::key(user, generation, "png");
    let body = b"\x89PNG\r\n\x1a\nkept across restarts".to_vec();
    s3.put_object()
        .bucket(BUCKET)
        .key(&key)
        .body(body.clone().into())
        .send()
        .await
        .unwrap();

    drop(server);
    let server = start(port, &dir).await;

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

    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}
