//! The thumbnail budget (issue 12): `bench-thumbnail` (a process that does
//! nothing else) makes the thumbnail and blurhash of a 2048×2048 output, as
//! the simulator draws it in each output format, plain and with
//! `[sim:noise]` (nearly incompressible: the slowest to decode), and reports
//! the p50 of its runs and its peak RSS.

use std::{path::Path, process::Command};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::Value;

use crate::{
    quota::{self, Cgroup, Share},
    simulator::Simulator,
    stats::{Summary, summarize},
};

/// Side of the square outputs thumbnailed.
pub const SIDE: u32 = 2048;
/// Targets: thumbnail + blurhash p50 (ms) and peak RSS (MB) of the process.
pub const P50_MS: f64 = 80.0;
pub const PEAK_RSS_MB: f64 = 64.0;

/// One input's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub format: &'static str,
    /// `drawing` (shapes on a gradient) or `noise` (`[sim:noise]`).
    pub content: &'static str,
    pub input_bytes: u64,
    pub time: Summary,
    pub peak_rss_mb: f64,
    pub thumbnail_bytes: u64,
}

/// Measures every format × content with `runs` timed runs each, in `group`
/// (the `thumbnails` function's CPU share) when given.
pub async fn measure(
    sim: &Simulator,
    binary: &Path,
    out: &Path,
    runs: usize,
    group: Option<&Cgroup>,
) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    for format in ["webp", "png", "jpg"] {
        for (content, marker) in [("drawing", ""), ("noise", " [sim:noise]")] {
            let prompt = format!("picture-bench thumbnail{marker}");
            let bytes = sim.render(&prompt, format, SIDE).await?;
            let input = out.join(format!("thumbnail-input-{content}.{format}"));
            std::fs::write(&input, &bytes)
                .with_context(|| format!("writing {}", input.display()))?;
            let mut cmd = Command::new(binary);
            cmd.arg(&input).arg(runs.to_string());
            // Kept open until the child has run: it joins the group before exec.
            let _procs = group
                .map(|g| quota::join_on_exec(&mut cmd, &g.procs()))
                .transpose()?;
            let run = cmd
                .output()
                .with_context(|| format!("running {}", binary.display()))?;
            if !run.status.success() {
                bail!(
                    "{} {}: {}",
                    binary.display(),
                    input.display(),
                    String::from_utf8_lossy(&run.stderr)
                );
            }
            let report: Value =
                serde_json::from_slice(&run.stdout).context("bench-thumbnail output")?;
            let samples: Vec<f64> = report["samples_ms"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_f64)
                .collect();
            figures.push(Figure {
                format,
                content,
                input_bytes: bytes.len() as u64,
                time: summarize(&samples).context("no samples")?,
                peak_rss_mb: report["maxrss_kib"].as_f64().unwrap_or_default() / 1024.0,
                thumbnail_bytes: report["thumbnail"]["bytes"].as_u64().unwrap_or_default(),
            });
        }
    }
    Ok(figures)
}

/// The report's lines: one per input, against the targets when `share` is
/// `None` (the targets are for a full core), else at that CPU share.
pub fn lines(figures: &[Figure], share: Option<&Share>) -> String {
    let mut text = match share {
        None => format!(
            "Thumbnail + blurhash of a {SIDE}×{SIDE} output (targets: p50 ≤ {P50_MS} ms, peak RSS ≤ {PEAK_RSS_MB} MB):\n"
        ),
        Some(s) => format!(
            "The same at the thumbnails function's CPU share ({} MB: {:.4} core, quota {} µs; no target):\n",
            s.memory_mb, s.cores, s.quota_us
        ),
    };
    for f in figures {
        let met = f.time.p50_ms <= P50_MS && f.peak_rss_mb <= PEAK_RSS_MB;
        let verdict = match (share, met) {
            (Some(_), _) => "",
            (None, true) => ": met",
            (None, false) => ": missed",
        };
        text.push_str(&format!(
            "- {} {} ({:.2} MB): p50 {:.1} ms, p99 {:.1} ms ({} runs), peak RSS {:.1} MB, thumbnail {:.1} KB{}\n",
            f.format,
            f.content,
            f.input_bytes as f64 / 1048576.0,
            f.time.p50_ms,
            f.time.p99_ms,
            f.time.count,
            f.peak_rss_mb,
            f.thumbnail_bytes as f64 / 1024.0,
            verdict
        ));
    }
    text
}
