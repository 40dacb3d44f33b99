//! Reader for timm-generated golden fixtures (`fixtures/golden/README.md`): one directory per case
//! with `model.json`, `weights.safetensors` and `io.safetensors`. Used by tests in several crates.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::{MaxxVitConfig, ModelArgs};
use crate::state_dict::{parse_safetensors, read_file};
use crate::ModelError;

/// Relative L2 error `‖a − b‖ / max(‖b‖, floor)`.
pub fn rel_l2(a: &[f32], b: &[f32], floor: f64) -> f64 {
    assert_eq!(a.len(), b.len(), "compared tensors differ in size");
    let diff: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum();
    let norm: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    diff.sqrt() / norm.sqrt().max(floor)
}

/// The golden README's tolerances.
pub const OUTPUT_TOL: f64 = 1e-4;
pub const GRAD_TOL: f64 = 1e-3;
pub const GRAD_FLOOR_FRACTION: f64 = 1e-3;

#[derive(Debug, Clone, Deserialize)]
struct CaseJson {
    case: String,
    cfg: MaxxVitConfig,
    num_classes: usize,
    img_size: [usize; 2],
    in_chans: usize,
    global_pool: String,
    drop_rate: f64,
    drop_path_rate: f64,
    #[serde(default)]
    dropout_disabled_in_train: Vec<String>,
    grad_global_norm: f64,
}

#[derive(Debug, Clone)]
pub struct GoldenCase {
    pub name: String,
    pub dir: PathBuf,
    pub cfg: MaxxVitConfig,
    pub args: ModelArgs,
    pub grad_global_norm: f64,
}

/// A tensor from `io.safetensors`, as f32 (or i64 for `target`).
#[derive(Debug, Clone)]
pub struct IoTensor {
    pub shape: Vec<usize>,
    pub f32: Vec<f32>,
    pub i64: Vec<i64>,
}

impl GoldenCase {
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join("model.json");
        let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Io { path: path.clone(), source })?;
        let json: CaseJson =
            serde_json::from_str(&text).map_err(|e| ModelError::Config(format!("{}: {e}", path.display())))?;
        let args = ModelArgs {
            img_size: json.img_size,
            in_chans: json.in_chans,
            num_classes: json.num_classes,
            global_pool: json.global_pool,
            drop_rate: json.drop_rate,
            drop_path_rate: json.drop_path_rate,
            // The fixtures ran RelPosMlp's train-mode dropout at p = 0 (and say so).
            rel_pos_mlp_drop: if json.dropout_disabled_in_train.is_empty() { 0.125 } else { 0.0 },
            features_only: false,
        };
        Ok(Self {
            name: json.case,
            dir: dir.to_path_buf(),
            cfg: json.cfg,
            args,
            grad_global_norm: json.grad_global_norm,
        })
    }

    pub fn weights(&self) -> PathBuf {
        self.dir.join("weights.safetensors")
    }

    pub fn io_path(&self) -> PathBuf {
        self.dir.join("io.safetensors")
    }

    /// Every tensor of `io.safetensors` by name.
    pub fn io(&self) -> Result<HashMap<String, IoTensor>, ModelError> {
        read_tensors(&self.io_path())
    }
}

/// All tensors of a safetensors file, floats widened to f32 and ints to i64.
pub fn read_tensors(path: &Path) -> Result<HashMap<String, IoTensor>, ModelError> {
    let bytes = read_file(path)?;
    let file = parse_safetensors(path, &bytes)?;
    let mut out = HashMap::new();
    for (name, view) in file.tensors() {
        let data = view.data();
        let (f32s, i64s) = match view.dtype() {
            safetensors::Dtype::F32 => {
                (data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(), vec![])
            }
            safetensors::Dtype::I64 => {
                (vec![], data.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect())
            }
            other => {
                return Err(ModelError::Format {
                    path: path.to_path_buf(),
                    reason: format!("tensor {name} has dtype {other:?}"),
                })
            }
        };
        out.insert(name, IoTensor { shape: view.shape().to_vec(), f32: f32s, i64: i64s });
    }
    Ok(out)
}

/// The reference data (golden fixtures and timm key lists, `fixtures/README.md`):
/// `$MAXXVIT_FIXTURES_DIR`, else `fixtures/` in the repository.
pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os("MAXXVIT_FIXTURES_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures"),
    }
}

/// The golden directory: `$MAXXVIT_GOLDEN_DIR`, else `golden/` in [`fixtures_dir`].
pub fn golden_dir() -> PathBuf {
    match std::env::var_os("MAXXVIT_GOLDEN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => fixtures_dir().join("golden"),
    }
}

/// Every case directory (one holding a `model.json`), sorted by name.
pub fn case_dirs(root: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let entries = std::fs::read_dir(root).map_err(|source| ModelError::Io { path: root.to_path_buf(), source })?;
    let mut dirs: Vec<PathBuf> =
        entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.join("model.json").is_file()).collect();
    dirs.sort();
    Ok(dirs)
}
