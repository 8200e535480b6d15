//! The targets of issue 5, each function's row against them, the markdown
//! table and the sync-generation line.

use std::fmt::Write as _;

use serde::Serialize;

use crate::{session::Measured, sync_gen::SyncOverhead};

/// Init at most this many times the hello-world floor.
pub const INIT_RATIO: f64 = 2.0;
/// The cold request (init + first invocation) at most this many times the
/// floor's, for the functions in [`COLD_FUNCTIONS`].
pub const COLD_RATIO: f64 = 4.0;
pub const COLD_FUNCTIONS: [&str; 1] = ["status"];
/// Warm p50 at most this (ms) for the functions in [`FAST_FUNCTIONS`].
pub const WARM_P50_MS: f64 = 2.0;
pub const FAST_FUNCTIONS: [&str; 2] = ["models", "status"];
pub const PEAK_RSS_MB: f64 = 40.0;
pub const ZIP_MB: f64 = 5.0;
/// Sync generation overhead p50 at most this (ms).
pub const SYNC_OVERHEAD_MS: f64 = 50.0;

const MB: f64 = 1024.0 * 1024.0;

/// A deployment package's size.
#[derive(Debug, Clone, Serialize)]
pub struct Zip {
    pub bytes: u64,
    /// `arm64` (from `make build`) or `x86_64` (zipped by the benchmark).
    pub arch: &'static str,
    pub path: String,
}

/// The floor's figures the others are compared with (p50s, ms).
#[derive(Debug, Clone, Copy)]
pub struct Floor {
    pub init_ms: f64,
    pub cold_ms: f64,
}

impl Floor {
    pub fn of(m: &Measured) -> Floor {
        Floor {
            init_ms: m.init.p50_ms,
            cold_ms: m.cold.p50_ms,
        }
    }
}

/// One function's figures against the targets.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub function: String,
    pub floor: bool,
    pub init_ms: f64,
    pub init_ratio: f64,
    pub first_ms: f64,
    /// The cold request: p50 of init + first invocation, and its ratio to the floor's.
    pub cold_ms: f64,
    pub cold_ratio: f64,
    pub warm_p50_ms: Option<f64>,
    pub warm_p99_ms: Option<f64>,
    pub peak_rss_mb: f64,
    pub zip: Option<Zip>,
    /// The targets missed, with the margin; empty when all are met.
    pub misses: Vec<String>,
}

impl Row {
    /// The row of `m`, whose init and cold request are compared with the floor's.
    pub fn new(m: &Measured, floor: bool, base: Floor, zip: Option<Zip>) -> Row {
        let floor_init_ms = base.init_ms;
        let init_ratio = m.init.p50_ms / floor_init_ms;
        let cold_ratio = m.cold.p50_ms / base.cold_ms;
        let peak_rss_mb = m.peak_rss_kib as f64 / 1024.0;
        let mut misses = Vec::new();
        if !floor {
            if init_ratio > INIT_RATIO {
                misses.push(format!(
                    "init {init_ratio:.2}× > {INIT_RATIO}× (+{:.1} ms)",
                    m.init.p50_ms - INIT_RATIO * floor_init_ms
                ));
            }
            if COLD_FUNCTIONS.contains(&m.function.as_str()) && cold_ratio > COLD_RATIO {
                misses.push(format!(
                    "cold request {cold_ratio:.2}× > {COLD_RATIO}× (+{:.1} ms)",
                    m.cold.p50_ms - COLD_RATIO * base.cold_ms
                ));
            }
            let fast = FAST_FUNCTIONS.contains(&m.function.as_str());
            if let Some(w) = m.warm.filter(|w| fast && w.p50_ms > WARM_P50_MS) {
                misses.push(format!(
                    "warm p50 {:.2} ms > {WARM_P50_MS} ms (+{:.2} ms)",
                    w.p50_ms,
                    w.p50_ms - WARM_P50_MS
                ));
            }
            if peak_rss_mb > PEAK_RSS_MB {
                misses.push(format!(
                    "RSS {peak_rss_mb:.1} MB > {PEAK_RSS_MB} MB (+{:.1} MB)",
                    peak_rss_mb - PEAK_RSS_MB
                ));
            }
            if let Some(z) = &zip {
                let mb = z.bytes as f64 / MB;
                if mb > ZIP_MB {
                    misses.push(format!(
                        "zip {mb:.2} MB > {ZIP_MB} MB (+{:.2} MB)",
                        mb - ZIP_MB
                    ));
                }
            }
            if m.wrong_answers > 0 {
                misses.push(format!("{} wrong answers", m.wrong_answers));
            }
        }
        Row {
            function: m.function.clone(),
            floor,
            init_ms: m.init.p50_ms,
            init_ratio,
            first_ms: m.first.p50_ms,
            cold_ms: m.cold.p50_ms,
            cold_ratio,
            warm_p50_ms: m.warm.map(|w| w.p50_ms),
            warm_p99_ms: m.warm.map(|w| w.p99_ms),
            peak_rss_mb,
            zip,
            misses,
        }
    }
}

/// The markdown table of `rows` (functions that could not be measured last).
pub fn table(rows: &[Row], failed: &[(String, String)]) -> String {
    let mut out = String::from(
        "| function | init ms | init ratio | first ms | cold ms | cold ratio | warm p50 ms | warm p99 ms | peak RSS MB | zip MB | target met? |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    let opt = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.2}"));
    for r in rows {
        let zip = r.zip.as_ref().map_or("–".to_string(), |z| {
            let mb = z.bytes as f64 / MB;
            if z.arch == "arm64" {
                format!("{mb:.2}")
            } else {
                format!("{mb:.2} (x86)")
            }
        });
        let verdict = if r.floor {
            "floor".to_string()
        } else if r.misses.is_empty() {
            "yes".to_string()
        } else {
            format!("no: {}", r.misses.join("; "))
        };
        let _ = writeln!(
            out,
            "| {}{} | {:.2} | {:.2}× | {:.2} | {:.2} | {:.2}× | {} | {} | {:.1} | {} | {} |",
            r.function,
            if r.floor { " (floor)" } else { "" },
            r.init_ms,
            r.init_ratio,
            r.first_ms,
            r.cold_ms,
            r.cold_ratio,
            opt(r.warm_p50_ms),
            opt(r.warm_p99_ms),
            r.peak_rss_mb,
            zip,
            verdict
        );
    }
    for (function, error) in failed {
        let error = error.lines().next().unwrap_or_default().replace('|', "/");
        let _ = writeln!(
            out,
            "| {function} | – | – | – | – | – | – | – | – | – | not measured: {error} |"
        );
    }
    out
}

/// The sync-generation line under the table.
pub fn sync_line(s: &SyncOverhead) -> String {
    let (Some(overhead), Some(e2e), Some(predict)) = (s.overhead, s.end_to_end, s.predict) else {
        return format!(
            "Sync generation overhead: not measured ({} of {} runs completed; {}).",
            s.completed,
            s.runs,
            s.problems.first().map_or("no details", String::as_str)
        );
    };
    let verdict = if overhead.p50_ms <= SYNC_OVERHEAD_MS {
        "met".to_string()
    } else {
        format!("missed by {:.1} ms", overhead.p50_ms - SYNC_OVERHEAD_MS)
    };
    format!(
        "Sync generation overhead (generate, Seedream 3 {side}×{side}, image p50 {size:.2} MB, \
         {done}/{runs} runs): p50 {o50:.1} ms, p99 {o99:.1} ms (end to end p50 {e:.1} ms, \
         predict_time p50 {p:.1} ms); target ≤ {SYNC_OVERHEAD_MS} ms: {verdict}.",
        side = s.image_side_px,
        size = s.image_bytes_p50.unwrap_or(0) as f64 / MB,
        done = s.completed,
        runs = s.runs,
        o50 = overhead.p50_ms,
        o99 = overhead.p99_ms,
        e = e2e.p50_ms,
        p = predict.p50_ms,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::summarize;

    fn measured(function: &str, init: f64, warm: f64, rss_kib: u64) -> Measured {
        let s = |v: f64| summarize(&[v]).expect("one sample");
        Measured {
            function: function.into(),
            init: s(init),
            first: s(init),
            cold: s(2.0 * init),
            first_event: "e".into(),
            warm: Some(s(warm)),
            events: Vec::new(),
            wrong_answers: 0,
            problems: Vec::new(),
            peak_rss_kib: rss_kib,
        }
    }

    #[test]
    fn rows_name_each_missed_target_with_its_margin() {
        let floor = Floor {
            init_ms: 3.0,
            cold_ms: 4.0,
        };
        let zip = |mb: f64| Zip {
            bytes: (mb * MB) as u64,
            arch: "arm64",
            path: "z".into(),
        };
        let ok = Row::new(
            &measured("models", 5.0, 1.0, 20 * 1024),
            false,
            floor,
            Some(zip(3.0)),
        );
        assert!(ok.misses.is_empty(), "{:?}", ok.misses);
        let bad = Row::new(
            &measured("status", 9.0, 3.0, 50 * 1024),
            false,
            floor,
            Some(zip(6.0)),
        );
        assert_eq!(
            bad.misses,
            [
                "init 3.00× > 2× (+3.0 ms)",
                "cold request 4.50× > 4× (+2.0 ms)",
                "warm p50 3.00 ms > 2 ms (+1.00 ms)",
                "RSS 50.0 MB > 40 MB (+10.0 MB)",
                "zip 6.00 MB > 5 MB (+1.00 MB)",
            ]
        );
        // Warm latency is a target for models and status only, the cold request for status.
        let slow = Row::new(&measured("images", 5.0, 9.0, 1024), false, floor, None);
        assert!(slow.misses.is_empty());
        let t = table(&[ok, bad], &[("webhook".into(), "boom".into())]);
        assert!(
            t.contains("| models | 5.00 | 1.67× | 5.00 | 10.00 | 2.50× |"),
            "{t}"
        );
        assert!(t.contains("| no: init 3.00×"), "{t}");
        assert!(t.contains("| webhook | – |"), "{t}");
    }
}
