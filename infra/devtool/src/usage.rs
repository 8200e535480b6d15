//! `picture-dev usage`: the usage report (`picture::usage`) as a table for
//! people or as JSON.

use anyhow::{Result, bail};
use picture::{
    AppState,
    usage::{self, Report, Usage, Window},
};

/// Parses the options, builds the report and prints it.
pub async fn run(args: &[&str]) -> Result<()> {
    let (mut since, mut until, mut json) = (None, None, false);
    for (flag, value) in crate::options("usage", args, &["--since", "--until", "--format"])? {
        match flag {
            "--since" => since = Some(value),
            "--until" => until = Some(value),
            _ => {
                json = match value {
                    "json" => true,
                    "table" => false,
                    other => bail!("--format: table or json, not {other:?}"),
                }
            }
        }
    }
    let window = Window::parse(
        since,
        until,
        chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 0),
    )
    .map_err(anyhow::Error::msg)?;
    let usd_rate: f64 = match std::env::var("USD_RATE") {
        Ok(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("USD_RATE: a number, not {v:?}"))?,
        Err(_) => 1.0,
    };
    let state = AppState::from_env().await?;
    let report = usage::report(&**state.db.get().await?, window, usd_rate).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    Ok(())
}

/// Column headings; every column after the first is right-aligned.
const HEADINGS: [&str; 15] = [
    "model",
    "generations",
    "completed",
    "failed",
    "cancelled",
    "refused",
    "free",
    "credits",
    "waived",
    "credits captured",
    "predict time",
    "predict p50",
    "est. cost",
    "cost/completed",
    "refused cost",
];

/// One row's cells: counts, seconds (`s`) and US dollars (`$`); `-` for none.
fn cells(name: &str, usage: &Usage) -> Vec<String> {
    let u = &usage.sums;
    let dollars = |x: f64| format!("${x:.4}");
    vec![
        name.to_string(),
        u.generations.to_string(),
        u.completed.to_string(),
        u.failed.to_string(),
        u.cancelled.to_string(),
        u.refused.to_string(),
        u.free.to_string(),
        u.credits.to_string(),
        u.waived.to_string(),
        u.credits_captured.to_string(),
        format!("{:.1} s", u.predict_seconds),
        u.predict_seconds_p50
            .map_or("-".into(), |s| format!("{s:.2} s")),
        dollars(u.estimated_cost_usd),
        usage.cost_per_completed_usd.map_or("-".into(), dollars),
        dollars(u.refused_cost_usd),
    ]
}

/// The report as an aligned table, the window first and the totals last.
fn table(r: &Report) -> String {
    let mut rows: Vec<Vec<String>> = vec![HEADINGS.iter().map(|h| h.to_string()).collect()];
    rows.extend(r.models.iter().map(|m| cells(&m.model, &m.usage)));
    rows.push(cells("total", &r.totals));
    let widths: Vec<usize> = (0..HEADINGS.len())
        .map(|c| {
            rows.iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = format!(
        "Provider usage of generations created {} – {} (UTC)\n",
        r.window.since.format("%Y-%m-%d %H:%M"),
        r.window.until.format("%Y-%m-%d %H:%M")
    );
    for (i, row) in rows.iter().enumerate() {
        if i == rows.len() - 1 {
            out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
            out.push('\n');
        }
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, w))| match c {
                0 => format!("{cell:<w$}"),
                _ => format!("{cell:>w$}"),
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out.push_str("Predict time: Replicate's metrics.predict_time. Cost: estimated from the catalog's prices.\n");
    let rev = &r.revenue;
    for s in &rev.sales {
        out.push_str(&format!(
            "Credits sold: {} purchases, {} credits, {:.2} {cur} gross, {:.2} {cur} net of refunds and disputes\n",
            s.purchases,
            s.credits_sold,
            s.gross_cents as f64 / 100.0,
            s.net_cents as f64 / 100.0,
            cur = s.currency.to_uppercase(),
        ));
    }
    match rev.margin_usd {
        Some(m) => out.push_str(&format!(
            "Gross margin of the credits spent: ${m:.2} (net ${:.4} a credit at {} USD per unit)\n",
            rev.net_usd_per_credit.unwrap_or_default(),
            rev.usd_rate
        )),
        None => out.push_str("Gross margin: no credits sold in this window\n"),
    }
    out
}
