//! Fashion-MNIST (Debian's `dataset-fashion-mnist`: 70,000 real 28×28 greyscale images in 10
//! classes), written as the two formats the trainer reads: an ImageFolder of JPEGs and
//! WebDataset shards with an `_info.json`, so both readers run on real images.

use std::io::Read;
use std::path::{Path, PathBuf};

use image::codecs::jpeg::JpegEncoder;
use image::ExtendedColorType;

use crate::wds::write_shard;
use crate::DataError;

/// Where Debian installs the package.
pub const DEBIAN_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Class names in label order; folder names carry the index so timm's natural sort keeps it.
pub const CLASSES: [&str; 10] =
    ["t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"];

pub fn class_dir(label: usize) -> String {
    format!("{label}-{}", CLASSES[label])
}

/// `$MAXXVIT_FASHION_MNIST_DIR`, else Debian's location.
pub fn default_dir() -> PathBuf {
    std::env::var_os("MAXXVIT_FASHION_MNIST_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEBIAN_DIR))
}

/// One split: `images[i]` is 28×28 row-major greyscale.
pub struct Split {
    pub images: Vec<Vec<u8>>,
    pub labels: Vec<u8>,
}

fn read_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let io = |source| DataError::Io { path: path.to_path_buf(), source };
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).map_err(io)?).read_to_end(&mut out).map_err(io)?;
    Ok(out)
}

fn be_u32(b: &[u8]) -> usize {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
}

/// Read `{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz` (IDX: big-endian magic, dims, data).
pub fn read_split(dir: &Path, prefix: &str) -> Result<Split, DataError> {
    let img_path = dir.join(format!("{prefix}-images-idx3-ubyte.gz"));
    let lbl_path = dir.join(format!("{prefix}-labels-idx1-ubyte.gz"));
    let bad = |p: &Path, m: &str| DataError::Decode { path: p.to_path_buf(), reason: m.to_string() };
    let images = read_gz(&img_path)?;
    let labels = read_gz(&lbl_path)?;
    if images.len() < 16 || be_u32(&images[0..4]) != 0x803 {
        return Err(bad(&img_path, "not an IDX3 image file"));
    }
    if labels.len() < 8 || be_u32(&labels[0..4]) != 0x801 {
        return Err(bad(&lbl_path, "not an IDX1 label file"));
    }
    let (n, h, w) = (be_u32(&images[4..8]), be_u32(&images[8..12]), be_u32(&images[12..16]));
    if images.len() != 16 + n * h * w || labels.len() != 8 + n || be_u32(&labels[4..8]) != n {
        return Err(bad(&img_path, "image and label counts disagree"));
    }
    Ok(Split { images: images[16..].chunks_exact(h * w).map(<[u8]>::to_vec).collect(), labels: labels[8..].to_vec() })
}

fn encode_jpeg(pixels: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, 90)
        .encode(pixels, 28, 28, ExtendedColorType::L8)
        .expect("in-memory JPEG encode");
    out
}

/// What `prepare` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub train: usize,
    pub val: usize,
    pub shards: usize,
}

/// Write `out/imagefolder/{train,val}/<class>/<n>.jpg` and
/// `out/wds/{train,val}-{000000..}.tar` + `out/wds/_info.json`. `limit` caps samples per split.
pub fn prepare(src: &Path, out: &Path, samples_per_shard: usize, limit: Option<usize>) -> Result<Prepared, DataError> {
    let mut counts = [0usize; 2];
    let mut info_splits = serde_json::Map::new();
    let mut total_shards = 0;
    for (i, (prefix, split)) in [("train", "train"), ("t10k", "val")].into_iter().enumerate() {
        let data = read_split(src, prefix)?;
        let n = limit.map_or(data.labels.len(), |l| l.min(data.labels.len()));
        counts[i] = n;
        let mut shard_names = Vec::new();
        let mut shard_lengths = Vec::new();
        let mut shard: Vec<(String, Vec<(&str, Vec<u8>)>)> = Vec::new();
        let wds_dir = out.join("wds");
        std::fs::create_dir_all(&wds_dir).map_err(|source| DataError::Io { path: wds_dir.clone(), source })?;
        let flush =
            |shard: &mut Vec<(String, Vec<(&str, Vec<u8>)>)>, names: &mut Vec<String>, lengths: &mut Vec<usize>| {
                if shard.is_empty() {
                    return Ok(());
                }
                let name = format!("{split}-{:06}.tar", names.len());
                write_shard(&wds_dir.join(&name), shard)?;
                names.push(name);
                lengths.push(shard.len());
                shard.clear();
                Ok::<(), DataError>(())
            };
        for idx in 0..n {
            let label = data.labels[idx] as usize;
            let jpeg = encode_jpeg(&data.images[idx]);
            let dir = out.join("imagefolder").join(split).join(class_dir(label));
            std::fs::create_dir_all(&dir).map_err(|source| DataError::Io { path: dir.clone(), source })?;
            let file = dir.join(format!("{idx:05}.jpg"));
            std::fs::write(&file, &jpeg).map_err(|source| DataError::Io { path: file.clone(), source })?;
            let key = format!("{split}_{idx:05}");
            let json =
                serde_json::json!({"label": label, "class": CLASSES[label], "width": 28, "height": 28, "index": idx});
            shard.push((
                key,
                vec![("jpg", jpeg), ("cls", label.to_string().into_bytes()), ("json", json.to_string().into_bytes())],
            ));
            if shard.len() == samples_per_shard {
                flush(&mut shard, &mut shard_names, &mut shard_lengths)?;
            }
        }
        flush(&mut shard, &mut shard_names, &mut shard_lengths)?;
        total_shards += shard_names.len();
        info_splits.insert(
            split.to_string(),
            serde_json::json!({"name": split, "filenames": shard_names, "shard_lengths": shard_lengths, "num_samples": n}),
        );
    }
    let info = serde_json::json!({"name": "fashion-mnist", "splits": info_splits, "classes": CLASSES});
    let info_path = out.join("wds").join("_info.json");
    std::fs::write(&info_path, serde_json::to_string_pretty(&info).unwrap())
        .map_err(|source| DataError::Io { path: info_path.clone(), source })?;
    let classes = out.join("classes.txt");
    let names: Vec<String> = (0..10).map(class_dir).collect();
    std::fs::write(&classes, names.join("\n") + "\n")
        .map_err(|source| DataError::Io { path: classes.clone(), source })?;
    Ok(Prepared { train: counts[0], val: counts[1], shards: total_shards })
}

/// Shard paths and sample count of one split from a WebDataset `_info.json`.
pub fn read_info(info_path: &Path, split: &str) -> Result<(Vec<PathBuf>, usize), DataError> {
    let bad = |m: String| DataError::Decode { path: info_path.to_path_buf(), reason: m };
    let text =
        std::fs::read_to_string(info_path).map_err(|source| DataError::Io { path: info_path.to_path_buf(), source })?;
    let info: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let s = info["splits"].get(split).ok_or_else(|| bad(format!("no split '{split}'")))?;
    let base = info_path.parent().unwrap_or(Path::new("."));
    let files = s["filenames"].as_array().ok_or_else(|| bad(format!("split '{split}' has no filenames")))?;
    let shards = files.iter().filter_map(|f| f.as_str()).map(|f| base.join(f)).collect();
    let n = s["num_samples"].as_u64().ok_or_else(|| bad(format!("split '{split}' has no num_samples")))? as usize;
    Ok((shards, n))
}
