//! `trainer predict`: top-5 classes per input, optionally saving logits / pre_logits / features.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use model::golden::read_tensors;
use model::state_dict::{serialize_state_dict, torch_metadata, write_atomic, EntryKind, KeyInfo, Values};
use model::{load_safetensors, LoadMode, MaxxVit, SaveDtype};

use crate::model_spec::ModelSpec;

pub struct PredictArgs {
    pub spec: ModelSpec,
    pub weights: PathBuf,
    pub images: Vec<PathBuf>,
    pub tensor_input: Option<PathBuf>,
    pub save: Option<PathBuf>,
    pub labels: Option<PathBuf>,
    pub batch_size: usize,
}

/// `[B, 3, H, W]` inputs: an already preprocessed `input` tensor, or images through timm's eval
/// transform (from the model's pretrained cfg; ImageNet-style 0.5/0.5 defaults otherwise).
fn load_inputs(args: &PredictArgs) -> Result<(Vec<f32>, [usize; 4], Vec<String>)> {
    if let Some(path) = &args.tensor_input {
        let tensors = read_tensors(path)?;
        let input = tensors.get("input").with_context(|| format!("{}: no tensor named `input`", path.display()))?;
        let [b, c, h, w] = input.shape[..] else {
            bail!("{}: `input` must be [B, C, H, W], found {:?}", path.display(), input.shape)
        };
        if input.f32.is_empty() {
            bail!("{}: `input` must be a float tensor", path.display());
        }
        let names = (0..b).map(|i| format!("{}[{i}]", path.display())).collect();
        return Ok((input.f32.clone(), [b, c, h, w], names));
    }
    if args.images.is_empty() {
        bail!("give image paths or --tensor-input FILE.safetensors");
    }
    let p = args.spec.pretrained;
    let transform = data::eval::EvalTransform {
        img_size: args.spec.args.img_size,
        crop_pct: p.map_or(0.95, |p| p.crop_pct),
        crop_mode: p.map_or("center", |p| p.crop_mode).to_string(),
        mean: p.map_or([0.5; 3], |p| p.mean),
        std: p.map_or([0.5; 3], |p| p.std),
        interpolation: p.map_or("bicubic", |p| p.interpolation).to_string(),
    };
    let mut values = Vec::new();
    for path in &args.images {
        values.extend(transform.load(path)?);
    }
    let [h, w] = args.spec.args.img_size;
    let names = args.images.iter().map(|p| p.display().to_string()).collect();
    Ok((values, [args.images.len(), 3, h, w], names))
}

fn read_labels(path: &Option<PathBuf>) -> Result<Vec<String>> {
    match path {
        Some(p) => Ok(std::fs::read_to_string(p)
            .with_context(|| format!("reading labels {}", p.display()))?
            .lines()
            .map(str::to_string)
            .collect()),
        None => Ok(vec![]),
    }
}

fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().expect("float data")
}

pub fn run<B: Backend>(device: &B::Device, args: PredictArgs) -> Result<()> {
    let model = MaxxVit::<B>::new(&args.spec.cfg, &args.spec.args, device)?;
    let (model, report) = load_safetensors(model, &args.weights, LoadMode::Strict)?;
    tracing::info!(weights = %args.weights.display(), loaded = report.loaded, dtypes = ?report.source_dtypes, "weights loaded");
    let (values, [b, c, h, w], names) = load_inputs(&args)?;
    if c != args.spec.args.in_chans {
        bail!("input has {c} channels, the model expects {}", args.spec.args.in_chans);
    }
    let labels = read_labels(&args.labels)?;

    let per_image = c * h * w;
    let mut outputs: HashMap<&str, (Vec<f32>, Vec<usize>)> = HashMap::new();
    for start in (0..b).step_by(args.batch_size.max(1)) {
        let n = (b - start).min(args.batch_size.max(1));
        let chunk = values[start * per_image..(start + n) * per_image].to_vec();
        let x = Tensor::<B, 4>::from_data(TensorData::new(chunk, [n, c, h, w]), device);
        let features = model.forward_features(x);
        let pre_logits = model.forward_head(features.clone(), true);
        let logits = model.forward_head(features.clone(), false);
        let probs = to_vec(softmax(logits.clone(), 1));
        let classes = logits.dims()[1];
        for i in 0..n {
            let row = &probs[i * classes..(i + 1) * classes];
            let mut order: Vec<usize> = (0..classes).collect();
            order.sort_by(|a, b| row[*b].total_cmp(&row[*a]));
            let top: Vec<String> = order
                .iter()
                .take(5)
                .map(|&k| match labels.get(k) {
                    Some(label) => format!("{k} {label} ({:.4})", row[k]),
                    None => format!("{k} ({:.4})", row[k]),
                })
                .collect();
            println!("{}: {}", names[start + i], top.join(", "));
        }
        for (name, t) in [("logits", to_vec(logits.clone())), ("pre_logits", to_vec(pre_logits.clone()))] {
            let entry = outputs
                .entry(name)
                .or_insert((vec![], vec![0, if name == "logits" { classes } else { pre_logits.dims()[1] }]));
            entry.0.extend(t);
            entry.1[0] += n;
        }
        let dims = features.dims();
        let entry = outputs.entry("features").or_insert((vec![], vec![0, dims[1], dims[2], dims[3]]));
        entry.0.extend(to_vec(features));
        entry.1[0] += n;
    }
    if let Some(path) = &args.save {
        let entries: Vec<(KeyInfo, Values)> = ["logits", "pre_logits", "features"]
            .iter()
            .map(|name| {
                let (v, shape) = outputs.remove(name).expect("computed");
                (KeyInfo { key: name.to_string(), shape, kind: EntryKind::Parameter }, Values::F32(v))
            })
            .collect();
        write_atomic(path, &serialize_state_dict(&entries, SaveDtype::F32, Some(torch_metadata()))?)?;
        tracing::info!(path = %path.display(), "saved logits, pre_logits and features");
    }
    Ok(())
}
