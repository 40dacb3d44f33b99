//! Which model to build: a registered name (optionally `name.tag`) or a config file.
//!
//! A config file may be JSON or TOML and may be
//! - a golden-fixture `model.json` / any object with a `cfg` (timm `MaxxVitCfg`) plus the
//!   constructor arguments beside it (`num_classes`, `img_size`, `in_chans`, `global_pool`, …);
//! - a bare `MaxxVitCfg` object;
//! - a timm / Hugging Face `config.json` (`architecture` = a registered name), or our release's
//!   `config.json` of a custom config (`maxxvit_cfg` + `model_args`).

use std::path::Path;

use anyhow::{bail, Context, Result};
use model::registry::lookup;
use model::{MaxxVitConfig, ModelArgs, PretrainedCfg};
use serde_json::Value;

/// A resolved model: architecture, constructor arguments and (for registered names) its
/// pretrained cfg, which carries the eval preprocessing.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub name: String,
    pub cfg: MaxxVitConfig,
    pub args: ModelArgs,
    pub pretrained: Option<&'static PretrainedCfg>,
}

impl ModelSpec {
    pub fn from_name(name: &str) -> Result<Self> {
        let (entry, tag) = lookup(name)?;
        let args = ModelArgs { num_classes: tag.num_classes, ..entry.default_args() };
        Ok(Self { name: format!("{}.{}", entry.name, tag.tag), cfg: entry.config(), args, pretrained: Some(tag) })
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading model config {}", path.display()))?;
        let value: Value = if path.extension().is_some_and(|e| e == "toml") {
            let table: toml::Value =
                toml::from_str(&text).with_context(|| format!("{}: invalid TOML", path.display()))?;
            serde_json::to_value(table)?
        } else {
            serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))?
        };
        Self::from_value(&value).with_context(|| format!("model config {}", path.display()))
    }

    fn from_value(value: &Value) -> Result<Self> {
        let Value::Object(map) = value else { bail!("expected an object") };
        // Our release of a custom config (release.rs): timm has no name for it, so the
        // config.json carries the MaxxVitCfg and the constructor arguments.
        if let Some(cfg) = map.get("maxxvit_cfg") {
            let mut spec = map.get("model_args").cloned().unwrap_or_else(|| serde_json::json!({}));
            let Value::Object(args) = &mut spec else { bail!("`model_args` is not an object") };
            args.insert("cfg".into(), cfg.clone());
            if let Some(pool) = map.get("global_pool") {
                args.insert("global_pool".into(), pool.clone());
            }
            return Self::from_value(&spec);
        }
        if let Some(Value::String(arch)) = map.get("architecture") {
            let mut spec = Self::from_name(arch)?;
            if let Some(n) = map.get("num_classes").and_then(Value::as_u64) {
                spec.args.num_classes = n as usize;
            }
            if let Some(Value::String(pool)) = map.get("global_pool") {
                spec.args.global_pool = pool.clone();
            }
            return Ok(spec);
        }
        let (cfg_value, args_source) = match map.get("cfg") {
            Some(cfg) => (cfg.clone(), Some(map)),
            None => (value.clone(), None),
        };
        let cfg: MaxxVitConfig = serde_json::from_value(cfg_value).context("field `cfg` is not a valid MaxxVitCfg")?;
        let mut args = ModelArgs::default();
        if let Some(map) = args_source {
            let get = |k: &str| map.get(k).filter(|v| !v.is_null());
            if let Some(v) = get("num_classes") {
                args.num_classes = serde_json::from_value(v.clone()).context("num_classes")?;
            }
            if let Some(v) = get("img_size") {
                args.img_size = match v {
                    Value::Number(n) => [n.as_u64().unwrap_or(0) as usize; 2],
                    other => serde_json::from_value(other.clone()).context("img_size")?,
                };
            }
            if let Some(v) = get("in_chans") {
                args.in_chans = serde_json::from_value(v.clone()).context("in_chans")?;
            }
            if let Some(Value::String(pool)) = get("global_pool") {
                args.global_pool = pool.clone();
            }
        }
        let name = map.get("case").and_then(Value::as_str).unwrap_or("custom").to_string();
        Ok(Self { name, cfg, args, pretrained: None })
    }
}
