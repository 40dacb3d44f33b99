//! `trainer predict`: top-5 classes per input, optionally saving logits / pre_logits / features.
//! Also the pieces `features` and `embed` share: the model with its weights, images in batches
//! through timm's eval transform, tensors to one safetensors file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use data::transform::EvalTransform;
use model::golden::read_tensors;
use model::state_dict::{serialize_state_dict, torch_metadata, write_atomic, EntryKind, KeyInfo, Values};
use model::{load_safetensors, LoadMode, MaxxVit, SaveDtype};

use crate::model_spec::{ModelSpec, Preprocess};
use crate::pretrained::class_names;

pub struct PredictArgs {
    pub spec: ModelSpec,
    pub weights: PathBuf,
    pub images: Vec<PathBuf>,
    pub tensor_input: Option<PathBuf>,
    pub save: Option<PathBuf>,
    /// `--labels FILE`, one class name per line.
    pub labels: Option<PathBuf>,
    /// The names a `--pretrained` config carries.
    pub label_names: Option<Vec<String>>,
    pub batch_size: usize,
}

/// The model of `spec` with `weights` loaded strictly.
pub fn load_model<B: Backend>(spec: &ModelSpec, weights: &Path, device: &B::Device) -> Result<MaxxVit<B>> {
    let model = MaxxVit::<B>::new(&spec.cfg, &spec.args, device)?;
    let (model, report) = load_safetensors(model, weights, LoadMode::Strict)?;
    tracing::info!(weights = %weights.display(), loaded = report.loaded, dtypes = ?report.source_dtypes, "weights loaded");
    Ok(model)
}

/// timm's eval transform of the model's pretrained cfg at its input size.
pub fn transform(spec: &ModelSpec) -> EvalTransform {
    Preprocess::eval_transform(spec.preprocess.as_ref(), spec.args.img_size)
}

/// `[n, 3, H, W]` of the images `paths`, through `transform`; an unreadable image is an error
/// naming it.
pub fn image_batch<B: Backend>(
    transform: &EvalTransform,
    paths: &[PathBuf],
    device: &B::Device,
) -> Result<Tensor<B, 4>> {
    let mut values = Vec::new();
    for path in paths {
        values.extend(transform.load(path)?);
    }
    let [h, w] = transform.img_size;
    Ok(Tensor::from_data(TensorData::new(values, [paths.len(), 3, h, w]), device))
}

pub fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().expect("float data")
}

/// Tensors gathered batch by batch along the first axis, saved together.
#[derive(Default)]
pub struct Collected {
    order: Vec<String>,
    tensors: HashMap<String, (Vec<f32>, Vec<usize>)>,
}

impl Collected {
    pub fn push<B: Backend, const D: usize>(&mut self, name: &str, t: Tensor<B, D>) {
        let dims = t.dims().to_vec();
        let entry = self.tensors.entry(name.to_string()).or_insert_with(|| {
            self.order.push(name.to_string());
            (vec![], [&[0], &dims[1..]].concat())
        });
        entry.0.extend(to_vec(t));
        entry.1[0] += dims[0];
    }

    /// `(name, shape)` in the order first pushed.
    pub fn shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.order.iter().map(|n| (n.clone(), self.tensors[n].1.clone())).collect()
    }

    /// One safetensors file (f32, torch's metadata plus `extra`).
    pub fn save(mut self, path: &Path, extra: &[(&str, String)]) -> Result<()> {
        let entries: Vec<(KeyInfo, Values)> = self
            .order
            .iter()
            .map(|name| {
                let (v, shape) = self.tensors.remove(name).expect("pushed");
                (KeyInfo { key: name.clone(), shape, kind: EntryKind::Parameter }, Values::F32(v))
            })
            .collect();
        let mut metadata = torch_metadata();
        metadata.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        write_atomic(path, &serialize_state_dict(&entries, SaveDtype::F32, Some(metadata))?)?;
        Ok(())
    }
}

/// `[B, 3, H, W]` from an already preprocessed `input` tensor.
fn tensor_input(path: &Path) -> Result<(Vec<f32>, [usize; 4], Vec<String>)> {
    let tensors = read_tensors(path)?;
    let input = tensors.get("input").with_context(|| format!("{}: no tensor named `input`", path.display()))?;
    let [b, c, h, w] = input.shape[..] else {
        bail!("{}: `input` must be [B, C, H, W], found {:?}", path.display(), input.shape)
    };
    if input.f32.is_empty() {
        bail!("{}: `input` must be a float tensor", path.display());
    }
    let names = (0..b).map(|i| format!("{}[{i}]", path.display())).collect();
    Ok((input.f32.clone(), [b, c, h, w], names))
}

/// "k name (p)" for the five most probable classes of one row.
fn top5(row: &[f32], labels: &[String]) -> String {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|a, b| row[*b].total_cmp(&row[*a]));
    let top: Vec<String> = order
        .iter()
        .take(5)
        .map(|&k| match labels.get(k) {
            Some(label) => format!("{k} {label} ({:.4})", row[k]),
            None => format!("{k} ({:.4})", row[k]),
        })
        .collect();
    top.join(", ")
}

pub fn run<B: Backend>(device: &B::Device, args: PredictArgs) -> Result<()> {
    let model = load_model::<B>(&args.spec, &args.weights, device)?;
    let labels = class_names(args.labels.as_deref(), args.label_names.clone(), model.num_classes())?;
    let batch_size = args.batch_size.max(1);
    // Either one preprocessed tensor, cut into batches, or image files loaded batch by batch.
    let (inputs, names): (Vec<Tensor<B, 4>>, Vec<String>) = match &args.tensor_input {
        Some(path) => {
            let (values, [b, c, h, w], names) = tensor_input(path)?;
            if c != args.spec.args.in_chans {
                bail!("{}: input has {c} channels, the model expects {}", path.display(), args.spec.args.in_chans);
            }
            let all = Tensor::<B, 4>::from_data(TensorData::new(values, [b, c, h, w]), device);
            ((0..b).step_by(batch_size).map(|s| all.clone().narrow(0, s, batch_size.min(b - s))).collect(), names)
        }
        None if args.images.is_empty() => bail!("give image paths or --tensor-input FILE.safetensors"),
        None => {
            let t = transform(&args.spec);
            let batches =
                args.images.chunks(batch_size).map(|c| image_batch::<B>(&t, c, device)).collect::<Result<_>>()?;
            (batches, args.images.iter().map(|p| p.display().to_string()).collect())
        }
    };
    let mut out = Collected::default();
    let mut next = 0;
    for x in inputs {
        let features = model.forward_features(x);
        let logits = model.forward_head(features.clone(), false);
        let probs = to_vec(softmax(logits.clone(), 1));
        let classes = logits.dims()[1];
        for row in probs.chunks(classes) {
            println!("{}: {}", names[next], top5(row, &labels));
            next += 1;
        }
        out.push("logits", logits);
        out.push("pre_logits", model.forward_head(features.clone(), true));
        out.push("features", features);
    }
    if let Some(path) = &args.save {
        out.save(path, &[])?;
        tracing::info!(path = %path.display(), "saved logits, pre_logits and features");
    }
    Ok(())
}
