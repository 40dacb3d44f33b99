//! `trainer features`: the feature map of the stem and of every stage (timm's
//! `forward_intermediates`), shapes printed, tensors saved to one safetensors file.

use std::path::PathBuf;

use anyhow::{bail, Result};
use burn::tensor::backend::Backend;

use super::predict::{image_batch, load_model, transform, Collected};
use crate::model_spec::ModelSpec;

pub struct FeaturesArgs {
    pub spec: ModelSpec,
    pub weights: PathBuf,
    pub images: Vec<PathBuf>,
    pub save: Option<PathBuf>,
    pub batch_size: usize,
}

/// Returns `(name, shape)` of each saved map: `stem`, `stages.0`, …
pub fn run<B: Backend>(device: &B::Device, args: FeaturesArgs) -> Result<Vec<(String, Vec<usize>)>> {
    if args.images.is_empty() {
        bail!("give one or more image files");
    }
    let model = load_model::<B>(&args.spec, &args.weights, device)?;
    let t = transform(&args.spec);
    let mut out = Collected::default();
    for chunk in args.images.chunks(args.batch_size.max(1)) {
        let maps = model.forward_intermediates(image_batch::<B>(&t, chunk, device)?);
        out.push("stem", maps.stem);
        for (i, stage) in maps.stages.into_iter().enumerate() {
            out.push(&format!("stages.{i}"), stage);
        }
    }
    let shapes = out.shapes();
    for ((name, shape), info) in shapes.iter().zip(model.feature_info()) {
        println!("{name}: {shape:?} ({} channels, reduction {})", info.num_chs, info.reduction);
    }
    if let Some(path) = &args.save {
        let images: Vec<String> = args.images.iter().map(|p| p.display().to_string()).collect();
        out.save(path, &[("images", serde_json::to_string(&images)?), ("model", args.spec.name.clone())])?;
        println!("saved {} feature maps of {} images to {}", shapes.len(), images.len(), path.display());
    }
    Ok(shapes)
}
