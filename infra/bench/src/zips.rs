//! Deployment package sizes: the arm64 `bootstrap.zip` that `make build`
//! leaves in `target/lambda/<function>/`, else the benchmarked x86_64 binary
//! zipped here (with the system `zip`, as cargo-lambda would package it).

use std::{path::Path, process::Command};

use anyhow::{Context, Result, bail};

use crate::report::Zip;

/// The package size of `function` whose benchmarked binary is `binary`.
pub fn size(root: &Path, out: &Path, function: &str, binary: &Path) -> Result<Zip> {
    let arm = root
        .join("target/lambda")
        .join(function)
        .join("bootstrap.zip");
    if let Ok(meta) = std::fs::metadata(&arm) {
        return Ok(Zip {
            bytes: meta.len(),
            arch: "arm64",
            path: arm.display().to_string(),
        });
    }
    let dir = out.join("zips").join(function);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let bootstrap = dir.join("bootstrap");
    let zip = dir.join("bootstrap.zip");
    std::fs::copy(binary, &bootstrap).with_context(|| format!("copying {}", binary.display()))?;
    let _ = std::fs::remove_file(&zip);
    let status = Command::new("zip")
        .args(["-q", "-j"])
        .arg(&zip)
        .arg(&bootstrap)
        .status()
        .context("running zip (apt-get install zip)")?;
    if !status.success() {
        bail!("zip failed for {function} ({status})");
    }
    let bytes = std::fs::metadata(&zip)
        .with_context(|| format!("reading {}", zip.display()))?
        .len();
    let _ = std::fs::remove_file(&bootstrap);
    Ok(Zip {
        bytes,
        arch: "x86_64",
        path: zip.display().to_string(),
    })
}
