//! `--pretrained SOURCE`: a model and its weights in one go, offline, from
//! - `hf-hub:ORG/NAME[@REVISION]`: the local Hugging Face cache, as `huggingface-cli download
//!   ORG/NAME` (or timm's `pretrained=True`) leaves it: `$HF_HUB_CACHE`, else `$HF_HOME/hub`,
//!   else `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`;
//! - a directory holding `config.json` + `model.safetensors`: a hub snapshot, or our release.
//!
//! Class names come from `--labels FILE`, else the config's `label_names` (through
//! `label_descriptions` where given, as timm's ImageNetInfo does), else the built-in ImageNet-1k
//! names when the head has 1,000 classes.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::model_spec::ModelSpec;

/// The ImageNet-1k class descriptions in timm's class order (timm 1.0.31's `ImageNetInfo`; see
/// `assets/README.md`).
const IMAGENET_1K: &str = include_str!("../assets/imagenet1k_classes.txt");

#[derive(Debug, Clone)]
pub struct Pretrained {
    pub spec: ModelSpec,
    pub weights: PathBuf,
    /// Class names from the config, if it has them.
    pub label_names: Option<Vec<String>>,
}

/// The Hugging Face hub cache, by huggingface_hub's own order of variables.
pub fn hub_cache_dir() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("HF_HUB_CACHE")
        .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
        .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| var("XDG_CACHE_HOME").map(|c| c.join("huggingface").join("hub")))
        .unwrap_or_else(|| var("HOME").unwrap_or_default().join(".cache").join("huggingface").join("hub"))
}

pub fn resolve(source: &str) -> Result<Pretrained> {
    let dir = match source.strip_prefix("hf-hub:") {
        Some(repo) => cached_snapshot(repo)?,
        None => PathBuf::from(source),
    };
    from_dir(&dir).with_context(|| format!("--pretrained {source}"))
}

/// `models--ORG--NAME/snapshots/<commit>` of the hub cache; the commit from `refs/<REVISION>`
/// (`main` by default), or REVISION itself when it is a cached commit.
fn cached_snapshot(repo: &str) -> Result<PathBuf> {
    let (repo, revision) = repo.split_once('@').unwrap_or((repo, "main"));
    if repo.split('/').count() != 2 || repo.split('/').any(str::is_empty) {
        bail!("hf-hub:{repo}: expected ORG/NAME, e.g. hf-hub:timm/maxvit_tiny_tf_224.in1k");
    }
    let cache = hub_cache_dir();
    let folder = cache.join(format!("models--{}", repo.replace('/', "--")));
    if !folder.is_dir() {
        bail!(
            "hf-hub:{repo} is not in the local Hugging Face cache {} (nothing is downloaded here: \
             run `huggingface-cli download {repo}` first, or set HF_HUB_CACHE / HF_HOME)",
            cache.display()
        );
    }
    let commit = if folder.join("snapshots").join(revision).is_dir() {
        revision.to_string()
    } else {
        let r = folder.join("refs").join(revision);
        std::fs::read_to_string(&r)
            .with_context(|| format!("hf-hub:{repo}: no revision `{revision}` in the cache ({} missing)", r.display()))?
            .trim()
            .to_string()
    };
    let snapshot = folder.join("snapshots").join(&commit);
    if !snapshot.is_dir() {
        bail!("hf-hub:{repo}: {} names commit {commit}, but {} is missing", revision, snapshot.display());
    }
    Ok(snapshot)
}

fn from_dir(dir: &Path) -> Result<Pretrained> {
    let config = dir.join("config.json");
    if !config.is_file() {
        bail!("{}: no config.json (a hub snapshot and our releases have one)", dir.display());
    }
    let weights = dir.join("model.safetensors");
    if !weights.is_file() {
        let other = ["pytorch_model.bin", "open_clip_pytorch_model.bin"].into_iter().find(|f| dir.join(f).is_file());
        match other {
            Some(f) => bail!("{}: only safetensors weights are read; this snapshot has {f}", dir.display()),
            None => bail!("{}: no model.safetensors", dir.display()),
        }
    }
    let spec = ModelSpec::from_file(&config)?;
    let text = std::fs::read_to_string(&config)?;
    let value: Value = serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", config.display()))?;
    let label_names = label_names(&value).with_context(|| format!("{}: label_names", config.display()))?;
    Ok(Pretrained { spec, weights, label_names })
}

/// timm's `label_names`: a list, or an object `{"0": name, …}`; mapped through
/// `label_descriptions` (name → description) where it has the name.
fn label_names(config: &Value) -> Result<Option<Vec<String>>> {
    let Some(names) = config.get("label_names").filter(|v| !v.is_null()) else { return Ok(None) };
    let names: Vec<String> = match names {
        Value::Array(a) => a.iter().map(|v| v.as_str().map(str::to_string)).collect::<Option<_>>(),
        Value::Object(m) => {
            let mut pairs: Vec<(usize, String)> = m
                .iter()
                .map(|(k, v)| Some((k.parse().ok()?, v.as_str()?.to_string())))
                .collect::<Option<_>>()
                .context("expected {\"class index\": \"name\"}")?;
            pairs.sort();
            Some(pairs.into_iter().map(|p| p.1).collect())
        }
        _ => None,
    }
    .context("expected a list of strings")?;
    let descriptions = config.get("label_descriptions");
    Ok(Some(
        names
            .into_iter()
            .map(|n| descriptions.and_then(|d| d.get(&n)).and_then(Value::as_str).map_or(n, str::to_string))
            .collect(),
    ))
}

/// Class names for a head of `num_classes`: `--labels FILE` (one per line), else the config's,
/// else ImageNet-1k's for 1,000 classes; empty (indices only) otherwise.
pub fn class_names(file: Option<&Path>, from_config: Option<Vec<String>>, num_classes: usize) -> Result<Vec<String>> {
    let names: Vec<String> = match (file, from_config) {
        (Some(p), _) => std::fs::read_to_string(p)
            .with_context(|| format!("reading labels {}", p.display()))?
            .lines()
            .map(str::to_string)
            .collect(),
        (None, Some(names)) => names,
        (None, None) if num_classes == 1000 => IMAGENET_1K.lines().map(str::to_string).collect(),
        (None, None) => return Ok(vec![]),
    };
    if names.len() < num_classes {
        let from = file.map_or("the config's label_names".to_string(), |p| p.display().to_string());
        bail!("{from}: {} class names for a head of {num_classes} classes", names.len());
    }
    Ok(names)
}
