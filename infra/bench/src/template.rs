//! What template.yaml gives each function that the benchmark must give it too:
//! its `MemorySize` (and so its CPU share, see [`crate::quota`]) and the
//! literal settings of `Globals.Function.Environment.Variables` (e.g.
//! `THUMBNAILS=event`).
//!
//! A small parse of the template's block layout (indentation, `key: value`
//! lines, `>`/`|` blocks skipped) rather than a YAML crate: only plain keys are
//! read, and values that are CloudFormation tags (`!Ref …`) are left out.

use std::{collections::HashMap, path::Path};

use anyhow::{Context, Result};

/// The template's figures, by binary name.
#[derive(Debug)]
pub struct Template {
    /// `Globals.Function.MemorySize`.
    default_memory_mb: u32,
    /// Functions whose `MemorySize` differs from the default, by `Metadata.BuildProperties.Binary`.
    overrides: HashMap<String, u32>,
    /// `Globals.Function.Environment.Variables` with literal values.
    pub env: Vec<(String, String)>,
}

impl Template {
    /// Reads `path` (template.yaml).
    pub fn load(path: &Path) -> Result<Template> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Template::parse(&text).with_context(|| format!("{}", path.display()))
    }

    /// The memory size (MB) of the function built as `binary`; the default
    /// for binaries that are not in the template (the `bench-*` helpers).
    pub fn memory_mb(&self, binary: &str) -> u32 {
        self.overrides
            .get(binary)
            .copied()
            .unwrap_or(self.default_memory_mb)
    }

    fn parse(text: &str) -> Result<Template> {
        let mut default_memory_mb = None;
        let mut binaries = HashMap::new();
        let mut memory = HashMap::new();
        let mut env = Vec::new();
        for (path, value) in scalars(text) {
            let keys: Vec<&str> = path.iter().map(String::as_str).collect();
            match keys.as_slice() {
                ["Globals", "Function", "MemorySize"] => default_memory_mb = value.parse().ok(),
                ["Globals", "Function", "Environment", "Variables", key]
                    if !value.starts_with('!') =>
                {
                    env.push((key.to_string(), value))
                }
                ["Resources", id, "Metadata", "BuildProperties", "Binary"] => {
                    binaries.insert(id.to_string(), value);
                }
                ["Resources", id, "Properties", "MemorySize"] => {
                    if let Ok(mb) = value.parse::<u32>() {
                        memory.insert(id.to_string(), mb);
                    }
                }
                _ => {}
            }
        }
        let overrides = memory
            .into_iter()
            .filter_map(|(id, mb)| Some((binaries.get(&id)?.clone(), mb)))
            .collect();
        Ok(Template {
            default_memory_mb: default_memory_mb.context("no Globals.Function.MemorySize")?,
            overrides,
            env,
        })
    }
}

/// Every `key: value` line of `text` with the keys above it and its value
/// (quotes and trailing comments removed).
fn scalars(text: &str) -> Vec<(Vec<String>, String)> {
    let mut found = Vec::new();
    let mut parents: Vec<(usize, String)> = Vec::new();
    let mut block_above: Option<usize> = None;
    for line in text.lines() {
        let body = line.trim_start();
        let indent = line.len() - body.len();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        match block_above {
            Some(key_indent) if indent > key_indent => continue,
            _ => block_above = None,
        }
        while parents.last().is_some_and(|(i, _)| *i >= indent) {
            parents.pop();
        }
        if body.starts_with('-') {
            continue;
        }
        let Some((key, value)) = body.split_once(':') else {
            continue;
        };
        let value = value.split(" #").next().unwrap_or_default().trim();
        if value.is_empty() {
            parents.push((indent, key.to_string()));
        } else if value.starts_with(['>', '|']) {
            block_above = Some(indent);
        } else {
            let mut path: Vec<String> = parents.iter().map(|(_, k)| k.clone()).collect();
            path.push(key.to_string());
            found.push((path, value.trim_matches('"').to_string()));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_and_literal_settings_are_read() {
        let t = Template::parse(
            "Globals:\n  Function:\n    MemorySize: 256\n    Environment:\n      Variables:\n        \
             A: \"25\"\n        B: !Ref X\n        # c: d\n        THUMBNAILS: event\n\
             Resources:\n  ThumbsFunction:\n    Metadata:\n      BuildProperties:\n        Binary: thumbs\n    \
             Properties:\n      Description: >\n        MemorySize: 9\n      MemorySize: 512 # measured\n  \
             Other:\n    Metadata:\n      BuildProperties:\n        Binary: other\n",
        )
        .unwrap();
        assert_eq!(t.memory_mb("thumbs"), 512);
        assert_eq!(t.memory_mb("other"), 256);
        assert_eq!(t.memory_mb("bench-hello"), 256);
        assert_eq!(
            t.env,
            [
                ("A".to_string(), "25".to_string()),
                ("THUMBNAILS".to_string(), "event".to_string())
            ]
        );
    }

    #[test]
    fn the_real_template_parses() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml");
        let t = Template::load(&root).unwrap();
        assert_eq!(t.memory_mb("generate"), t.default_memory_mb);
        assert!(t.memory_mb("thumbnails") >= t.default_memory_mb);
        assert!(t.env.iter().any(|(k, v)| k == "THUMBNAILS" && v == "event"));
    }
}
