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

/// A resolved model: architecture, constructor arguments, (for registered names) its
/// pretrained cfg, and the eval preprocessing of its weights where known.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub name: String,
    pub cfg: MaxxVitConfig,
    pub args: ModelArgs,
    pub pretrained: Option<&'static PretrainedCfg>,
    pub preprocess: Option<Preprocess>,
}

/// timm's eval preprocessing of a pretrained cfg (`crop_pct`, `mean`, …), from the registry or
/// from a `config.json`'s `pretrained_cfg`.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    pub crop_pct: f64,
    pub crop_mode: String,
    pub mean: [f64; 3],
    pub std: [f64; 3],
    pub interpolation: String,
}

/// timm's `_cfg` defaults of maxxvit.py: crop 0.95 center, mean/std 0.5, bicubic.
impl Default for Preprocess {
    fn default() -> Self {
        Self {
            crop_pct: 0.95,
            crop_mode: "center".into(),
            mean: [0.5; 3],
            std: [0.5; 3],
            interpolation: "bicubic".into(),
        }
    }
}

impl Preprocess {
    fn of(p: &PretrainedCfg) -> Self {
        Self {
            crop_pct: p.crop_pct,
            crop_mode: p.crop_mode.into(),
            mean: p.mean,
            std: p.std,
            interpolation: p.interpolation.into(),
        }
    }

    /// Fields present in a `pretrained_cfg` object replace this one's.
    fn update(&mut self, cfg: &Value) -> Result<()> {
        let get = |k: &str| cfg.get(k).filter(|v| !v.is_null()).cloned();
        if let Some(v) = get("crop_pct") {
            self.crop_pct = serde_json::from_value(v).context("pretrained_cfg.crop_pct")?;
        }
        if let Some(v) = get("crop_mode") {
            self.crop_mode = serde_json::from_value(v).context("pretrained_cfg.crop_mode")?;
        }
        if let Some(v) = get("mean") {
            self.mean = serde_json::from_value(v).context("pretrained_cfg.mean")?;
        }
        if let Some(v) = get("std") {
            self.std = serde_json::from_value(v).context("pretrained_cfg.std")?;
        }
        if let Some(v) = get("interpolation") {
            self.interpolation = serde_json::from_value(v).context("pretrained_cfg.interpolation")?;
        }
        Ok(())
    }

    /// timm's eval transform for `img_size`; the defaults without a cfg.
    pub fn eval_transform(p: Option<&Self>, img_size: [usize; 2]) -> data::transform::EvalTransform {
        let p = p.cloned().unwrap_or_default();
        data::transform::EvalTransform {
            img_size,
            crop_pct: p.crop_pct,
            crop_mode: p.crop_mode,
            mean: p.mean,
            std: p.std,
            interpolation: p.interpolation,
        }
    }
}

impl ModelSpec {
    pub fn from_name(name: &str) -> Result<Self> {
        let (entry, tag) = lookup(name)?;
        let args = ModelArgs { num_classes: tag.num_classes, ..entry.default_args() };
        Ok(Self {
            name: format!("{}.{}", entry.name, tag.tag),
            cfg: entry.config(),
            args,
            pretrained: Some(tag),
            preprocess: Some(Preprocess::of(tag)),
        })
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
            for key in ["global_pool", "pretrained_cfg"] {
                if let Some(v) = map.get(key) {
                    args.insert(key.into(), v.clone());
                }
            }
            return Self::from_value(&spec);
        }
        if let Some(Value::String(arch)) = map.get("architecture") {
            return Self::from_hf_config(arch, map);
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
        // Our release of a custom config carries its preprocessing in `pretrained_cfg`.
        let preprocess = match map.get("pretrained_cfg") {
            Some(p) => {
                let mut pre = Preprocess::default();
                pre.update(p)?;
                Some(pre)
            }
            None => None,
        };
        Ok(Self { name, cfg, args, pretrained: None, preprocess })
    }

    /// A timm / Hugging Face `config.json` (timm's `save_config_for_hf`): `architecture`, its
    /// `pretrained_cfg` (tag and preprocessing), `num_classes`, `global_pool`, `model_args`.
    fn from_hf_config(arch: &str, map: &serde_json::Map<String, Value>) -> Result<Self> {
        let pretrained_cfg = map.get("pretrained_cfg");
        let tag = pretrained_cfg.and_then(|p| p.get("tag")).and_then(Value::as_str);
        // A registered tag (`in1k`) selects that pretrained cfg; our releases' run-name tags do not.
        let tagged = tag.map(|t| format!("{arch}.{t}")).filter(|n| lookup(n).is_ok());
        let mut spec = Self::from_name(tagged.as_deref().unwrap_or(arch))?;
        let model_args = map.get("model_args");
        let get = |k: &str| map.get(k).or_else(|| model_args.and_then(|a| a.get(k))).filter(|v| !v.is_null());
        if let Some(n) = get("num_classes") {
            spec.args.num_classes = serde_json::from_value(n.clone()).context("num_classes")?;
        }
        if let Some(Value::String(pool)) = get("global_pool") {
            spec.args.global_pool = pool.clone();
        }
        if let Some(v) = model_args.and_then(|a| a.get("img_size")).filter(|v| !v.is_null()) {
            spec.args.img_size = match v {
                Value::Number(n) => [n.as_u64().unwrap_or(0) as usize; 2],
                other => serde_json::from_value(other.clone()).context("model_args.img_size")?,
            };
        }
        if let (Some(pre), Some(p)) = (&mut spec.preprocess, pretrained_cfg) {
            pre.update(p)?;
        }
        Ok(spec)
    }
}
