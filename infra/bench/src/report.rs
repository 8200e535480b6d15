//! The targets of issue 5, each function's row against them, the markdown
//! table and the sync-generation line; the figures at the Lambda CPU share
//! next to the full core's (issue 21).

use std::fmt::Write as _;

use serde::Serialize;

use crate::{
    quota::Share,
    session::Measured,
    sync_gen::{OUTPUTS, SyncOverhead, SyncRun},
};

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
/// At the CPU share, each output's sync overhead p50 at most this many times the SVG's.
pub const SHARE_SYNC_RATIO: f64 = 1.2;
/// The output the sync overheads are compared with (no thumbnail is made of it).
pub const BASELINE_OUTPUT: &str = "svg-1024";

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
        side = s.output.side,
        size = s.image_bytes_p50.unwrap_or(0) as f64 / MB,
        done = s.completed,
        runs = s.runs,
        o50 = overhead.p50_ms,
        o99 = overhead.p99_ms,
        e = e2e.p50_ms,
        p = predict.p50_ms,
    )
}

/// The p50s of one function at one CPU (ms).
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub init_ms: f64,
    pub cold_ms: f64,
    pub warm_p50_ms: Option<f64>,
    pub warm_p99_ms: Option<f64>,
}

impl Figures {
    fn of(m: &Measured) -> Figures {
        Figures {
            init_ms: m.init.p50_ms,
            cold_ms: m.cold.p50_ms,
            warm_p50_ms: m.warm.map(|w| w.p50_ms),
            warm_p99_ms: m.warm.map(|w| w.p99_ms),
        }
    }
}

/// One function at a full core and at the share its memory size gives it on Lambda.
#[derive(Debug, Clone, Serialize)]
pub struct ShareRow {
    pub function: String,
    pub share: Share,
    pub full_core: Figures,
    pub at_share: Figures,
}

impl ShareRow {
    /// The row of `full` (unthrottled) and `throttled` (run at `share`).
    pub fn new(full: &Measured, throttled: &Measured, share: Share) -> ShareRow {
        ShareRow {
            function: full.function.clone(),
            share,
            full_core: Figures::of(full),
            at_share: Figures::of(throttled),
        }
    }
}

/// The markdown table of the functions at a full core and at their share.
pub fn share_table(rows: &[ShareRow]) -> String {
    let mut out = String::from(
        "| function | MemorySize MB | CPU share (quota µs / 100,000) | init ms full / share | cold request ms full / share | warm p50 ms full / share | warm p99 ms full / share |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    let pair = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => format!("{a:.2} / {b:.2}"),
        _ => "–".to_string(),
    };
    for r in rows {
        let (f, s) = (&r.full_core, &r.at_share);
        let _ = writeln!(
            out,
            "| {} | {} | {:.4} ({}) | {} | {} | {} | {} |",
            r.function,
            r.share.memory_mb,
            r.share.cores,
            r.share.quota_us,
            pair(Some(f.init_ms), Some(s.init_ms)),
            pair(Some(f.cold_ms), Some(s.cold_ms)),
            pair(f.warm_p50_ms, s.warm_p50_ms),
            pair(f.warm_p99_ms, s.warm_p99_ms),
        );
    }
    out
}

/// Each output's sync overhead p50 divided by the baseline's (SVG) in the same run.
pub fn sync_ratios(run: &SyncRun) -> Vec<(&'static str, Option<f64>)> {
    let base = run
        .output(BASELINE_OUTPUT)
        .and_then(|b| b.overhead)
        .map(|o| o.p50_ms);
    run.outputs
        .iter()
        .map(|o| {
            let ratio = o.overhead.zip(base).map(|(o, b)| o.p50_ms / b);
            (o.output.name, ratio)
        })
        .collect()
}

/// The markdown table of the sync overheads per output, at a full core and
/// (when measured) at the generate function's share, with the verdict on
/// [`SHARE_SYNC_RATIO`].
pub fn sync_table(full: &SyncRun, share: Option<(&SyncRun, Share)>) -> String {
    let mut out = String::from(
        "| output | image p50 KB | overhead p50 / p99 ms, full core | ×SVG | overhead p50 / p99 ms, at share | ×SVG |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    let cell = |o: Option<&SyncOverhead>| {
        o.and_then(|o| o.overhead).map_or("–".to_string(), |s| {
            format!("{:.1} / {:.1}", s.p50_ms, s.p99_ms)
        })
    };
    let ratio = |r: Option<f64>| r.map_or("–".to_string(), |r| format!("{r:.2}×"));
    let full_ratios = sync_ratios(full);
    let share_ratios = share.map(|(run, _)| sync_ratios(run));
    for (i, output) in OUTPUTS.iter().enumerate() {
        let f = full.output(output.name);
        let s = share.and_then(|(run, _)| run.output(output.name));
        let _ = writeln!(
            out,
            "| {} ({}²) | {} | {} | {} | {} | {} |",
            output.name,
            output.side,
            f.and_then(|f| f.image_bytes_p50)
                .map_or("–".to_string(), |b| format!("{:.1}", b as f64 / 1024.0)),
            cell(f),
            ratio(full_ratios[i].1),
            cell(s),
            ratio(share_ratios.as_ref().and_then(|r| r[i].1)),
        );
    }
    match (share, share_ratios) {
        (Some((_, quota)), Some(ratios)) => {
            let worst = ratios
                .iter()
                .filter_map(|(_, r)| *r)
                .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))));
            let verdict = match worst {
                Some(w) if w <= SHARE_SYNC_RATIO => format!("met (worst {w:.2}×)"),
                Some(w) => format!("missed (worst {w:.2}×)"),
                None => "not measured".to_string(),
            };
            let _ = writeln!(
                out,
                "\nAt {:.4} core ({} MB, cfs quota {} / {} µs): each output ≤ {SHARE_SYNC_RATIO}× the SVG's overhead: {verdict}.",
                quota.cores, quota.memory_mb, quota.quota_us, quota.period_us
            );
        }
        _ => out.push_str("\nNot measured at the Lambda CPU share (no writable cgroup).\n"),
    }
    out
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
