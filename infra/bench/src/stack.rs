//! The local stack the functions run against: started with
//! `infra/scripts/stack.sh up`, its settings read from `.dev/local.env` with the
//! tests' database and bucket in place of the dev store (what the benchmark leaves,
//! e.g. generations whose simulator is gone, never shows in `make dev`'s audit),
//! migrated and set up (bucket, runtime table) with `picture-dev`.

use std::{path::Path, process::Command};

use anyhow::{Context, Result, bail};

/// `KEY=VALUE` settings of the local stack.
pub type Env = Vec<(String, String)>;

/// Starts the stack (reusing running services) and returns its settings.
pub fn up(root: &Path) -> Result<Env> {
    let status = Command::new("bash")
        .arg("infra/scripts/stack.sh")
        .arg("up")
        .current_dir(root)
        .status()
        .context("running infra/scripts/stack.sh up")?;
    if !status.success() {
        bail!("infra/scripts/stack.sh up failed ({status})");
    }
    let file = root.join(".dev/local.env");
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    Ok(test_store(parse_env(&text)))
}

/// The settings with `DATABASE_URL` and `IMAGES_BUCKET` taken from `TEST_DATABASE_URL`
/// and `TEST_IMAGES_BUCKET` (as `make test` does), when those are set.
fn test_store(env: Env) -> Env {
    let get = |key: &str| env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let (db, bucket) = (get("TEST_DATABASE_URL"), get("TEST_IMAGES_BUCKET"));
    env.into_iter()
        .map(|(k, v)| match k.as_str() {
            "DATABASE_URL" => (k, db.clone().unwrap_or(v)),
            "IMAGES_BUCKET" => (k, bucket.clone().unwrap_or(v)),
            _ => (k, v),
        })
        .collect()
}

/// Parses `KEY=VALUE` lines (blank lines and `#` comments skipped).
pub fn parse_env(text: &str) -> Env {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Runs `picture-dev ARGS` with the stack's settings; returns its stdout.
pub fn picture_dev(root: &Path, env: &Env, args: &[&str]) -> Result<String> {
    let tool = root.join("target/debug/picture-dev");
    if !tool.exists() {
        bail!("{} is missing: run `make build-dev`", tool.display());
    }
    let out = Command::new(&tool)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(root)
        .output()
        .with_context(|| format!("running picture-dev {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "picture-dev {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Migrates and sets up the stack, then returns a dev token for `user`.
pub fn prepare(root: &Path, env: &Env, user: &str) -> Result<String> {
    picture_dev(root, env, &["migrate"])?;
    picture_dev(root, env, &["setup"])?;
    let out = picture_dev(root, env, &["token", user])?;
    out.lines()
        .last()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .context("picture-dev token printed nothing")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_are_key_value_lines() {
        let env = parse_env("# c\nA=1\n\nB = x=y \nnonsense\n");
        assert_eq!(
            env,
            vec![("A".into(), "1".into()), ("B".into(), "x=y".into())]
        );
    }

    #[test]
    fn the_benchmark_writes_into_the_tests_store() {
        let env = test_store(parse_env(
            "DATABASE_URL=pg/picture\nIMAGES_BUCKET=dev\nTEST_DATABASE_URL=pg/picture_test\nTEST_IMAGES_BUCKET=test\n",
        ));
        let get = |key: &str| env.iter().find(|(k, _)| k == key).unwrap().1.clone();
        assert_eq!(
            (get("DATABASE_URL"), get("IMAGES_BUCKET")),
            ("pg/picture_test".into(), "test".into())
        );
    }
}
