//! The local stack the functions run against: started with
//! `infra/scripts/stack.sh up`, its settings read from `.dev/local.env`,
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
    Ok(parse_env(&text))
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
}
