//! Checkpoints: `checkpoints/step-<n>/` holding `model.safetensors` and `ema.safetensors`
//! (timm layout), `optimizer.safetensors` (AdamW/LAMB moments by timm key) and `state.json`
//! (step, epoch, loader position, config hash, metrics and the sha256 of every file).
//!
//! A checkpoint is written into `step-<n>.tmp/`, every file fsynced, then renamed and the
//! directory fsynced: a crash leaves either the old set or the complete new one. On resume a
//! checkpoint whose files are missing or whose hashes do not match is skipped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use model::state_dict::{serialize_state_dict, torch_metadata, EntryKind, KeyInfo, Values};
use model::{MaxxVit, SaveDtype};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::optim::{Moments, Optimizer};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer updates done.
    pub global_step: u64,
    pub epoch: u64,
    /// Loader batches consumed in `epoch` (micro-batches, for accumulation).
    pub batches_in_epoch: usize,
    pub config_hash: String,
    /// Samples per micro-step over all ranks (the data position's unit).
    #[serde(default)]
    pub global_batch: usize,
    #[serde(default)]
    pub world: usize,
    pub model_name: String,
    pub num_classes: usize,
    /// Last validation metrics (top1, top5, loss), if any.
    pub metrics: Option<Metrics>,
    pub lr: f64,
    pub train_loss: f64,
    pub files: HashMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub top1: f64,
    pub top5: f64,
    pub loss: f64,
}

fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

fn optimizer_bytes<B: AutodiffBackend>(opt: &Optimizer<B>) -> Result<Vec<u8>> {
    let mut moments = opt.moments();
    moments.sort_by(|a, b| a.0.cmp(&b.0));
    let mut entries = Vec::new();
    for (key, m) in &moments {
        for (name, t) in [("exp_avg", &m.exp_avg), ("exp_avg_sq", &m.exp_avg_sq)] {
            let v = t.clone().into_data().convert::<f32>().to_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
            entries.push((
                KeyInfo { key: format!("{name}.{key}"), shape: vec![v.len()], kind: EntryKind::Parameter },
                Values::F32(v),
            ));
        }
    }
    // The step goes in as a tensor: safetensors writes a HashMap's metadata in hash order, and
    // a checkpoint must be byte-for-byte reproducible.
    entries.push((
        KeyInfo { key: "step".into(), shape: vec![], kind: EntryKind::Counter },
        Values::I64(vec![opt.step as i64]),
    ));
    Ok(serialize_state_dict(&entries, SaveDtype::F32, Some(torch_metadata()))?)
}

/// Write a checkpoint atomically; returns its directory.
pub fn save<B: AutodiffBackend>(
    dir: &Path,
    model: &MaxxVit<B>,
    ema: Option<&MaxxVit<B::InnerBackend>>,
    opt: &Optimizer<B>,
    mut state: TrainState,
) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let name = format!("step-{:09}", state.global_step);
    let tmp = dir.join(format!("{name}.tmp"));
    let final_dir = dir.join(&name);
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let weights = model.state_dict();
    if let Some((info, _)) =
        weights.iter().find(|(_, v)| matches!(v, Values::F32(x) if x.iter().any(|f| !f.is_finite())))
    {
        bail!("refusing to checkpoint step {}: {} holds NaN/inf (the run diverged)", state.global_step, info.key);
    }
    let model_bytes = serialize_state_dict(&weights, SaveDtype::F32, Some(torch_metadata()))?;
    let mut files = vec![("model.safetensors", model_bytes), ("optimizer.safetensors", optimizer_bytes(opt)?)];
    if let Some(ema) = ema {
        files.push((
            "ema.safetensors",
            serialize_state_dict(&ema.state_dict(), SaveDtype::F32, Some(torch_metadata()))?,
        ));
    }
    for (file, bytes) in &files {
        write_synced(&tmp.join(file), bytes)?;
        state.files.insert(file.to_string(), Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect());
    }
    write_synced(&tmp.join("state.json"), serde_json::to_string_pretty(&state)?.as_bytes())?;
    std::fs::File::open(&tmp)?.sync_all()?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir)?;
    }
    std::fs::rename(&tmp, &final_dir)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(final_dir)
}

/// Read and verify a checkpoint's state (every file present, every hash matching).
pub fn verify(ckpt: &Path) -> Result<TrainState> {
    let state_path = ckpt.join("state.json");
    let text =
        std::fs::read_to_string(&state_path).with_context(|| format!("{}: no readable state.json", ckpt.display()))?;
    let state: TrainState =
        serde_json::from_str(&text).with_context(|| format!("{}: damaged state.json", state_path.display()))?;
    for (file, hash) in &state.files {
        let got = sha256_file(&ckpt.join(file))?;
        if &got != hash {
            bail!("{}: {file} does not match its recorded sha256", ckpt.display());
        }
    }
    if !state.files.contains_key("model.safetensors") {
        bail!("{}: no model.safetensors recorded", ckpt.display());
    }
    Ok(state)
}

/// Checkpoint directories under `dir`, newest step first (temporary ones excluded).
pub fn list(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_string();
            let step = name.strip_prefix("step-")?.parse().ok()?;
            Some((step, p))
        })
        .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0));
    found.into_iter().map(|(_, p)| p).collect()
}

/// `--resume auto`: the newest checkpoint that verifies; damaged ones are reported and skipped.
pub fn newest_good(dir: &Path) -> Option<(PathBuf, TrainState)> {
    for ckpt in list(dir) {
        match verify(&ckpt) {
            Ok(state) => return Some((ckpt, state)),
            Err(e) => tracing::warn!("skipping damaged checkpoint: {e:#}"),
        }
    }
    None
}

/// Restore the optimizer moments saved by [`save`].
pub fn load_optimizer<B: AutodiffBackend>(
    ckpt: &Path,
    opt: &mut Optimizer<B>,
    device: &burn::tensor::Device<B::InnerBackend>,
) -> Result<()> {
    let path = ckpt.join("optimizer.safetensors");
    let tensors = model::golden::read_tensors(&path)?;
    let step = tensors.get("step").and_then(|t| t.i64.first().copied());
    let step = step.with_context(|| format!("{}: no optimizer step", path.display()))? as u64;
    let load = |n: &str| {
        let v = &tensors[n];
        Tensor::<B::InnerBackend, 1>::from_data(TensorData::new(v.f32.clone(), [v.f32.len()]), device)
    };
    let mut moments = HashMap::new();
    for name in tensors.keys() {
        if let Some(key) = name.strip_prefix("exp_avg.") {
            let second = format!("exp_avg_sq.{key}");
            if !tensors.contains_key(&second) {
                bail!("{}: {name} has no {second}", path.display());
            }
            moments.insert(key.to_string(), Moments { exp_avg: load(name), exp_avg_sq: load(&second) });
        }
    }
    opt.restore(step, moments);
    Ok(())
}

/// Keep the newest `keep_last` checkpoints and the `keep_best` best by val top-1.
pub fn prune(dir: &Path, keep_last: usize, keep_best: usize) {
    let all = list(dir);
    let mut keep: std::collections::HashSet<PathBuf> = all.iter().take(keep_last.max(1)).cloned().collect();
    let mut scored: Vec<(f64, PathBuf)> =
        all.iter().filter_map(|p| verify(p).ok().and_then(|s| s.metrics.map(|m| (m.top1, p.clone())))).collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    keep.extend(scored.into_iter().take(keep_best).map(|(_, p)| p));
    for p in all {
        if !keep.contains(&p) {
            let _ = std::fs::remove_dir_all(&p);
        }
    }
}
