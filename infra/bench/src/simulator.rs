//! A Replicate simulator of the benchmark's own (`infra/replicate-sim/sim.py`
//! on a free port), so the run neither disturbs nor is disturbed by other
//! users of the stack's simulator, and always knows the `[sim:noise]` marker.
//! It reads predictions back to learn their predict time.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// How many of the newest predictions are searched for a prompt.
const SEARCH_PAGE: u32 = 50;

/// The simulator's timings of one prediction (seconds).
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    pub predict_s: f64,
    pub total_s: f64,
}

/// A running simulator; dropping it kills the process.
pub struct Simulator {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    token: String,
    http: reqwest::Client,
    child: Child,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Simulator {
    /// Starts `sim.py` with `python`, accepting `token` and signing webhooks
    /// with `secret`; its log goes to `log`.
    pub async fn start(
        python: &Path,
        sim: &Path,
        token: &str,
        secret: &str,
        log: &Path,
    ) -> Result<Simulator> {
        let log =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = Command::new(python)
            .arg(sim)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .env("SIM_API_TOKEN", token)
            .env("SIM_WEBHOOK_SECRET", secret)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} {}", python.display(), sim.display()))?;
        let stdout = child.stdout.take().context("simulator stdout")?;
        let mut sim = Simulator {
            base_url: String::new(),
            token: token.to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            child,
        };
        // The first line names the port; read it off the runtime's threads.
        let first_line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        });
        let ready = tokio::time::timeout(Duration::from_secs(15), first_line)
            .await
            .context("the simulator did not start within 15 s")???;
        let Some(base_url) = ready.strip_prefix("replicate-sim listening on ") else {
            bail!("unexpected first line from the simulator: {ready:?}");
        };
        sim.base_url = base_url.trim().to_string();
        Ok(sim)
    }

    /// `host:port`, for `OUTPUT_ALLOWED_HOSTS`.
    pub fn host(&self) -> &str {
        self.base_url.trim_start_matches("http://")
    }

    /// The timings of the newest prediction whose prompt is `prompt`: found in
    /// the list, then read with `GET /v1/predictions/{id}`.
    pub async fn timings(&self, prompt: &str) -> Result<Timings> {
        let list = self
            .get(&format!("/v1/predictions?page_size={SEARCH_PAGE}"))
            .await?;
        let id = list["results"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["input"]["prompt"] == prompt)
            .and_then(|p| p["id"].as_str())
            .with_context(|| format!("no prediction with prompt {prompt:?}"))?
            .to_string();
        let prediction = self.get(&format!("/v1/predictions/{id}")).await?;
        let metric = |name: &str| {
            prediction["metrics"][name]
                .as_f64()
                .with_context(|| format!("prediction {id} has no metrics.{name}"))
        };
        Ok(Timings {
            predict_s: metric("predict_time")?,
            total_s: metric("total_time")?,
        })
    }

    /// The image the simulator draws for `prompt` at `side`² in `format`
    /// (`webp`, `png`, `jpg`): a FLUX prediction with `Prefer: wait`, then its output file.
    pub async fn render(&self, prompt: &str, format: &str, side: u32) -> Result<Vec<u8>> {
        let url = format!(
            "{}/v1/models/black-forest-labs/flux-schnell/predictions",
            self.base_url
        );
        let input = serde_json::json!({"prompt": prompt, "width": side, "height": side, "output_format": format});
        let prediction: Value = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .header("Prefer", "wait=30")
            .timeout(Duration::from_secs(40))
            .json(&serde_json::json!({ "input": input }))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("POST {url}"))?
            .json()
            .await
            .with_context(|| format!("POST {url}: not JSON"))?;
        let output = prediction["output"][0]
            .as_str()
            .or_else(|| prediction["output"].as_str())
            .with_context(|| format!("no output in {prediction}"))?;
        let bytes = self
            .http
            .get(output)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("GET {output}"))?
            .bytes()
            .await?;
        Ok(bytes.to_vec())
    }

    async fn get(&self, path: &str) -> Result<Value> {
        let url = format!("{}{path}", self.base_url);
        self.http
            .get(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("GET {url}"))?
            .json()
            .await
            .with_context(|| format!("GET {url}: not JSON"))
    }
}
