//! `trainer embed`: image embeddings (timm's `forward_head(pre_logits=True)`) of every image
//! under a folder, to one safetensors file: `embeddings` `[N, D]`, and the images' paths
//! (relative to the folder, in row order) as JSON in the metadata key `files`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;

use super::predict::{image_batch, load_model, transform, Collected};
use crate::model_spec::ModelSpec;

pub struct EmbedArgs {
    pub spec: ModelSpec,
    pub weights: PathBuf,
    pub folder: PathBuf,
    pub out: PathBuf,
    pub batch_size: usize,
}

const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

/// Image files under `dir`, recursively, sorted by path (the embedding rows' order).
pub fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = vec![];
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
            if path.is_dir() {
                pending.push(path);
            } else if ext.is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str())) {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Returns the `[N, D]` shape written.
pub fn run<B: Backend>(device: &B::Device, args: EmbedArgs) -> Result<[usize; 2]> {
    let files = image_files(&args.folder)?;
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
