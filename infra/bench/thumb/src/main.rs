//! `bench-thumbnail FILE RUNS`: makes the thumbnail and blurhash of the image
//! in FILE (`picture::thumbnail::make`, as the completion path does) once to
//! warm up, then RUNS times, and prints one JSON line: every run's time in
//! milliseconds, the thumbnail's size and the process's peak RSS
//! (`getrusage` `ru_maxrss`). The process does nothing else, so its peak RSS
//! is what one thumbnail costs on top of an idle binary.

use std::time::Instant;

use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [file, runs] = args.as_slice() else {
        return Err("usage: bench-thumbnail FILE RUNS".into());
    };
    let runs: usize = runs.parse()?;
    let bytes = std::fs::read(file)?;
    let first = picture::thumbnail::make(&bytes)?;
    let mut samples_ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let thumb = picture::thumbnail::make(&bytes)?;
        samples_ms.push(start.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(thumb.blurhash, first.blurhash, "deterministic");
    }
    // SAFETY: getrusage only writes into the struct it is given.
    let maxrss_kib = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage.ru_maxrss
    };
    println!(
        "{}",
        json!({
            "input_bytes": bytes.len(),
            "samples_ms": samples_ms,
            "thumbnail": {"width": first.width, "height": first.height, "bytes": first.webp.len()},
            "blurhash": first.blurhash,
            "maxrss_kib": maxrss_kib,
        })
    );
    Ok(())
}
