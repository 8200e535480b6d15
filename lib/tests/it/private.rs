//! Private instances of the local services, for tests that inject faults
//! (freeze, kill, restart, throttle) without disturbing the tests beside them:
//! a Replicate simulator, an S3 server (s3s-fs) and a throwaway PostgreSQL
//! cluster, each on its own port, stopped when dropped.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use serde_json::{Value, json};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The tools virtualenv (`make` installs it).
fn venv() -> PathBuf {
    std::env::var("PICTURE_VENV").map_or_else(
        |_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/picture-venv"),
        PathBuf::from,
    )
}

/// A free loopback port (taken, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `port` on loopback accepts connections.
pub async fn wait_for_port(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("nothing listens on :{port}");
}

/// A process killed when dropped.
pub struct Process(pub Child);

impl Process {
    /// Freezes the process (`SIGSTOP`): its clients hang.
    pub fn freeze(&self) {
        signal(self.0.id(), "STOP");
    }

    /// Resumes a frozen process (`SIGCONT`).
    pub fn resume(&self) {
        signal(self.0.id(), "CONT");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        signal(self.0.id(), "CONT");
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok || sig == "CONT", "kill -{sig} {pid} failed");
}

/// A Replicate simulator of this test's own.
pub struct PrivateSim {
    pub url: String,
    pub process: Process,
}

impl PrivateSim {
    pub async fn start() -> PrivateSim {
        PrivateSim::start_on(free_port()).await
    }

    /// Stops the simulator and starts a new one on the same port: it has forgotten
    /// every prediction (Replicate answers 404 for them).
    pub async fn restart(&mut self) {
        let port = self.url.rsplit(':').next().unwrap().parse().unwrap();
        let _ = self.process.0.kill();
        let _ = self.process.0.wait();
        *self = PrivateSim::start_on(port).await;
    }

    async fn start_on(port: u16) -> PrivateSim {
        let child = Command::new(venv().join("bin/python"))
            .arg(root().join("infra/replicate-sim/sim.py"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .env(
                "SIM_API_TOKEN",
                std::env::var("REPLICATE_API_TOKEN").unwrap(),
            )
            .env(
                "SIM_WEBHOOK_SECRET",
                std::env::var("REPLICATE_WEBHOOK_SECRET").unwrap(),
            )
            .env("SIM_WEBHOOK_RETRY_DELAYS", "0.5,1,2,4")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the simulator starts (run with `make test`)");
        let process = Process(child);
        wait_for_port(port).await;
        PrivateSim {
            url: format!("http://127.0.0.1:{port}"),
            process,
        }
    }

    /// Settings that point a stack at this simulator.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("REPLICATE_API_BASE_URL", self.url.clone()),
            (
                "OUTPUT_ALLOWED_HOSTS",
                self.url.trim_start_matches("http://").to_string(),
            ),
        ]
    }

    /// The next `count` calls of each of `ops` (create, get, list, cancel) answer `status`.
    pub async fn inject(&self, ops: &[&str], status: u16, count: u32) {
        let res = reqwest::Client::new()
            .post(format!("{}/_sim/faults", self.url))
            .json(&json!({"ops": ops, "status": status, "count": count}))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success());
    }

    /// Ends every injected fault.
    pub async fn clear(&self) {
        reqwest::Client::new()
            .delete(format!("{}/_sim/faults", self.url))
            .send()
            .await
            .unwrap();
    }
}

/// An S3 server (s3s-fs, `S3S_FS_BIN`) of this test's own, over a directory of
/// its own, with the images bucket created.
pub struct PrivateS3 {
    pub port: u16,
    dir: tempdir::Dir,
    pub process: Option<Process>,
}

impl PrivateS3 {
    pub async fn start(bucket: &str) -> PrivateS3 {
        let mut s3 = PrivateS3 {
            port: free_port(),
            dir: tempdir::Dir::new("picture-s3"),
            process: None,
        };
        s3.restart().await;
        let client = aws_sdk_s3::Client::new(&s3.sdk().await);
        let location = aws_sdk_s3::types::BucketLocationConstraint::from("eu-central-1");
        client
            .create_bucket()
            .bucket(bucket)
            .create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(location)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        s3
    }

    /// Kills the server (if running) and starts it again on the same directory.
    pub async fn restart(&mut self) {
        self.process = None;
        let bin = std::env::var("S3S_FS_BIN").expect("S3S_FS_BIN: run the tests with `make test`");
        let child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", "test", "--secret-key", "test"])
            .arg(&self.dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.process = Some(Process(child));
        wait_for_port(self.port).await;
    }

    /// The running server's process.
    pub fn process(&self) -> &Process {
        self.process.as_ref().expect("the server runs")
    }

    /// AWS settings for this server (a few quick attempts, as against a real endpoint).
    pub async fn sdk(&self) -> aws_config::SdkConfig {
        aws_config::from_env()
            .endpoint_url(format!("http://127.0.0.1:{}", self.port))
            .load()
            .await
    }
}

/// A throwaway PostgreSQL cluster (trust auth) of this test's own, migrated.
pub struct PrivatePostgres {
    pub url: String,
    bin: PathBuf,
    data: tempdir::Dir,
    port: u16,
}

/// A temporary directory removed when dropped.
mod tempdir {
    use std::path::PathBuf;

    pub struct Dir(pub PathBuf);

    impl Dir {
        pub fn new(prefix: &str) -> Dir {
            let dir =
                std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&dir).unwrap();
            Dir(dir)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl PrivatePostgres {
    pub async fn start() -> PrivatePostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is installed")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .max()
            .unwrap();
        let data = tempdir::Dir::new("picture-pg");
        as_postgres(&format!("chown postgres {}", data.0.display()), false);
        as_postgres(
            &format!(
                "{} -U postgres -A trust -D {}/data >/dev/null",
                bin.join("initdb").display(),
                data.0.display()
            ),
            true,
        );
        let port = free_port();
        let pg = PrivatePostgres {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            bin,
            port,
            data,
        };
        pg.ctl("start");
        picture::db::migrate(&pg.url, None).await.unwrap();
        pg
    }

    /// `pg_ctl restart`: every connection is dropped.
    pub fn restart(&self) {
        self.ctl("restart -m fast");
    }

    fn ctl(&self, what: &str) {
        as_postgres(
            &format!(
                "{} -D {dir}/data -l {dir}/log -w -o '-p {} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off' {what}",
                self.bin.join("pg_ctl").display(),
                self.port,
                dir = self.data.0.display(),
            ),
            true,
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.ctl("stop -m immediate");
    }
}

/// Runs a shell command as the `postgres` user (as root), or as is.
fn as_postgres(cmd: &str, su: bool) {
    let status = if su {
        Command::new("su").args(["postgres", "-c", cmd]).status()
    } else {
        Command::new("sh").args(["-c", cmd]).status()
    };
    assert!(status.is_ok_and(|s| s.success()), "{cmd}");
}

/// The Stripe simulator's secret key and webhook signing secret in tests.
pub const STRIPE_KEY: &str = "sk_test_sim";
pub const STRIPE_SECRET: &str = "whsec_picture_test_stripe";

/// A Stripe simulator of this test's own, on `port`, delivering its events to `webhook`.
pub struct PrivateStripe {
    pub url: String,
    /// Stopped when the test's simulator is dropped.
    _process: Process,
}

impl PrivateStripe {
    pub async fn start(port: u16, webhook: &str) -> PrivateStripe {
        let child = Command::new(venv().join("bin/python"))
            .arg(root().join("infra/stripe-sim/sim.py"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .env("STRIPE_SIM_SECRET_KEY", STRIPE_KEY)
            .env("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET)
            .env("STRIPE_WEBHOOK_URL", webhook)
            .env("STRIPE_SIM_RETRY_DELAYS", "0.2,0.5,1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the Stripe simulator starts (run with `make test`)");
        let process = Process(child);
        wait_for_port(port).await;
        PrivateStripe {
            url: format!("http://127.0.0.1:{port}"),
            _process: process,
        }
    }

    /// A call to the simulator (its API with the key, or its `/_sim` controls).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = reqwest::Client::new()
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(STRIPE_KEY);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// A form-encoded POST to its API, as Stripe's clients send (`/v1/refunds`).
    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let res = reqwest::Client::new()
            .post(format!("{}{path}", self.url))
            .bearer_auth(STRIPE_KEY)
            .form(form)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }
}
