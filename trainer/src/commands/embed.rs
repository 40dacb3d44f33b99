//! `trainer embed`: image embeddings (timm's `forward_head(pre_logits=True)`) of every image
//! under a folder, to one safetensors file: `embeddings` `[N, D]`, and the images' paths
//! (relative to the folder, in row order) as JSON in the metadata key `files`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use data::folder::{image_files, IMAGE_EXTENSIONS};

use super::predict::{image_batch, load_model, transform, Collected};
use crate::model_spec::ModelSpec;

pub struct EmbedArgs {
    pub spec: ModelSpec,
    pub weights: PathBuf,
    pub folder: PathBuf,
    pub out: PathBuf,
    pub batch_size: usize,
}

/// Returns the `[N, D]` shape written.
pub fn run<B: Backend>(device: &B::Device, args: EmbedArgs) -> Result<[usize; 2]> {
    let files = image_files(&args.folder).with_context(|| format!("reading {}", args.folder.display()))?;
    if files.is_empty() {
        bail!("{}: no image files ({}) in it or below it", args.folder.display(), IMAGE_EXTENSIONS.join(", "));
    }
    let model = load_model::<B>(&args.spec, &args.weights, device)?;
    let t = transform(&args.spec);
    let mut out = Collected::default();
    for chunk in files.chunks(args.batch_size.max(1)) {
        out.push("embeddings", model.forward_head(model.forward_features(image_batch::<B>(&t, chunk, device)?), true));
    }
    let shape = out.shapes()[0].1.clone();
    let names: Vec<String> =
        files.iter().map(|f| f.strip_prefix(&args.folder).unwrap_or(f).display().to_string()).collect();
    out.save(&args.out, &[("files", serde_json::to_string(&names)?), ("model", args.spec.name.clone())])?;
    println!(
        "embedded {} images of {} to {}: embeddings {shape:?}",
        names.len(),
        args.folder.display(),
        args.out.display()
    );
    Ok([shape[0], shape[1]])
}
