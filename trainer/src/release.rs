//! `trainer release`: weights a timm user loads as they are — `model.safetensors` (timm
//! `state_dict()` layout), `config.json` in the Hugging Face format timm writes (spec §9), and a
//! model card — re-loaded and checked against the weights in memory before success is reported.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::{Distribution, Tensor};
use model::state_dict::{serialize_state_dict, torch_metadata, write_atomic};
use model::{load_safetensors, LoadMode, MaxxVit, SaveDtype};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::checkpoint::{self, TrainState};
use crate::config::RunConfig;
use crate::setup;

/// A run directory (its best checkpoint by val top-1, else the newest) or a checkpoint directory.
pub fn resolve_checkpoint(path: &Path) -> Result<(PathBuf, TrainState)> {
    if path.join("state.json").is_file() {
        return Ok((path.to_path_buf(), checkpoint::verify(path)?));
    }
    let dir = path.join("checkpoints");
    let mut candidates: Vec<(PathBuf, TrainState)> =
        checkpoint::list(&dir).into_iter().filter_map(|p| checkpoint::verify(&p).ok().map(|s| (p, s))).collect();
    if candidates.is_empty() {
        bail!("{}: no readable checkpoint (expected a run directory or a checkpoint directory)", path.display());
    }
    // Newest first; the best top-1 wins, the newest among equals.
    candidates.sort_by(|a, b| {
        let (ma, mb) =
            (a.1.metrics.map_or(f64::NEG_INFINITY, |m| m.top1), b.1.metrics.map_or(f64::NEG_INFINITY, |m| m.top1));
        mb.total_cmp(&ma).then(b.1.global_step.cmp(&a.1.global_step))
    });
    Ok(candidates.remove(0))
}

pub struct ReleaseArgs {
    pub source: PathBuf,
    pub out: PathBuf,
    pub ema: bool,
    pub dtype: SaveDtype,
    pub labels: Option<PathBuf>,
}

/// Write the release on the CPU backend (weights in, weights out, one self-check forward: no
/// device to choose). Not generic, so the binary and the tests share one compiled copy.
pub fn run(args: ReleaseArgs) -> Result<()> {
    type B = burn::backend::Flex;
    let device = &burn::backend::flex::FlexDevice;
    let (ckpt, state) = resolve_checkpoint(&args.source)?;
    let run_dir = ckpt.parent().and_then(Path::parent).context("checkpoint has no run directory")?;
    let cfg_path = run_dir.join("config.toml");
    let cfg =
        RunConfig::load(&cfg_path, &[]).with_context(|| format!("reading the run's config {}", cfg_path.display()))?;
    let spec = setup::model_spec(&cfg)?;
    let weights = ckpt.join(if args.ema { "ema.safetensors" } else { "model.safetensors" });
    if !weights.is_file() {
        bail!("{} not found{}", weights.display(), if args.ema { " (the run had no EMA)" } else { "" });
    }
    let model = MaxxVit::<B>::new(&spec.cfg, &spec.args, device)?;
    let (model, _) = load_safetensors(model, &weights, LoadMode::Strict)?;

    std::fs::create_dir_all(&args.out)?;
    let model_file = args.out.join("model.safetensors");
    let bytes = serialize_state_dict(&model.state_dict(), args.dtype, Some(torch_metadata()))?;
    write_atomic(&model_file, &bytes)?;
    let sha: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();

    // pretrained_cfg as timm's `save_config_for_hf` writes it (spec §9.1).
    let [h, w] = spec.args.img_size;
    let eval = setup::eval_transform(&cfg, &spec);
    let arch = spec.name.split('.').next().unwrap_or(&spec.name).to_string();
    let mut config = json!({
        "architecture": arch,
        "num_classes": spec.args.num_classes,
        "num_features": spec.cfg.num_features(),
        "global_pool": spec.args.global_pool,
        "pretrained_cfg": {
            "tag": cfg.name,
            "custom_load": false,
            "input_size": [3, h, w],
            "fixed_input_size": true,
            "interpolation": eval.interpolation,
            "crop_pct": eval.crop_pct,
            "crop_mode": eval.crop_mode,
            "mean": eval.mean,
            "std": eval.std,
            "num_classes": spec.args.num_classes,
            "pool_size": [h / 32, w / 32],
            "first_conv": "stem.conv1",
            "classifier": "head.fc",
        },
    });
    if cfg.model.config_file.is_some() {
        config["model_args"] = json!({"img_size": [h, w], "num_classes": spec.args.num_classes});
        config["maxxvit_cfg"] = serde_json::to_value(&spec.cfg)?;
    }
    // --labels, else the training folder's class names the run recorded (when they fit the head).
    let run_classes = run_dir.join(crate::train::CLASSES_FILE);
    let names: Option<Vec<String>> = match &args.labels {
        Some(labels) => {
            let text =
                std::fs::read_to_string(labels).with_context(|| format!("reading labels {}", labels.display()))?;
            let names: Vec<String> = text.lines().map(str::to_string).collect();
            if names.len() != spec.args.num_classes {
                bail!(
                    "{}: {} class names for a head of {} classes",
                    labels.display(),
                    names.len(),
                    spec.args.num_classes
                );
            }
            Some(names)
        }
        None => std::fs::read_to_string(&run_classes)
            .ok()
            .map(|t| t.lines().map(str::to_string).collect::<Vec<_>>())
            .filter(|n| n.len() == spec.args.num_classes),
    };
    if let Some(names) = names {
        config["label_names"] = json!(names);
    }
    write_atomic(&args.out.join("config.json"), serde_json::to_string_pretty(&config)?.as_bytes())?;

    let metrics = state.metrics.map_or("not validated".to_string(), |m| {
        format!("top-1 {:.3} %, top-5 {:.3} %, loss {:.4}", m.top1, m.top5, m.loss)
    });
    let card = format!(
        "---\ntags:\n- image-classification\n- timm\nlibrary_name: timm\nlicense: apache-2.0\n---\n# Model card for {arch}.{tag}\n\n\
         Trained with maxxvit-rs (run `{run}`, {step} optimizer steps, {which} weights).\n\n\
         - Validation: {metrics}\n- Weights: `model.safetensors` ({dtype:?}), sha256 `{sha}`\n\n\
         {snippet}\n\n## Training config\n\n```toml\n{toml}```\n",
        tag = cfg.name,
        run = run_dir.display(),
        step = state.global_step,
        which = if args.ema { "EMA" } else { "model" },
        dtype = args.dtype,
        snippet = card_snippet(&arch, spec.args.num_classes, cfg.model.config_file.is_some()),
        toml = cfg.to_toml(),
    );
    write_atomic(&args.out.join("README.md"), card.as_bytes())?;

    // Self-check: the written file loads strictly and gives the same logits.
    let reloaded =
        load_safetensors(MaxxVit::<B>::new(&spec.cfg, &spec.args, device)?, &model_file, LoadMode::Strict)?.0;
    let x = Tensor::<B, 4>::random([2, spec.args.in_chans, h, w], Distribution::Normal(0.0, 1.0), device);
    let (a, b) = (model.forward(x.clone()), reloaded.forward(x));
    let err: f64 = (a.clone() - b).square().sum().sqrt().into_scalar().elem::<f64>()
        / a.square().sum().sqrt().into_scalar().elem::<f64>().max(1e-12);
    let tol = if args.dtype == SaveDtype::F32 { 0.0 } else { 5e-2 };
    if err > tol {
        bail!("self-check failed: reloaded release differs from the checkpoint (rel err {err:.2e})");
    }
    println!(
        "released {} (step {}) to {}: sha256 {sha}, self-check rel err {err:.1e}",
        ckpt.display(),
        state.global_step,
        args.out.display()
    );
    Ok(())
}

use burn::tensor::ElementConversion;

/// The model card's Python, run from the release directory (tests/timm_interop.py executes it).
/// A registered architecture loads by name; a custom config (`model.config_file`) has no timm
/// name, so the snippet builds timm's `MaxxVit` from the `maxxvit_cfg` in `config.json`.
fn card_snippet(arch: &str, num_classes: usize, custom: bool) -> String {
    if !custom {
        return format!(
            "```python\nimport timm\nmodel = timm.create_model('{arch}', pretrained=True, num_classes={num_classes},\n    \
             pretrained_cfg_overlay=dict(file='model.safetensors', num_classes={num_classes}))\nmodel.eval()\n```"
        );
    }
    "```python\n\
     # A custom MaxxVit config: timm has no name for it, so build it from config.json.\n\
     import json\n\
     from safetensors.torch import load_file\n\
     from timm.models.maxxvit import MaxxVit, MaxxVitCfg, MaxxVitConvCfg, MaxxVitTransformerCfg\n\
     config = json.load(open('config.json'))\n\
     tupled = lambda d: {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}\n\
     c = tupled(config['maxxvit_cfg'])\n\
     c['conv_cfg'] = MaxxVitConvCfg(**tupled(config['maxxvit_cfg']['conv_cfg']))\n\
     c['transformer_cfg'] = MaxxVitTransformerCfg(**tupled(config['maxxvit_cfg']['transformer_cfg']))\n\
     model = MaxxVit(MaxxVitCfg(**c), **config['model_args'])\n\
     model.load_state_dict(load_file('model.safetensors'))\n\
     model.pretrained_cfg = config['pretrained_cfg']  # for timm.data.resolve_data_config(model=model)\n\
     model.eval()\n\
     ```"
    .to_string()
}
