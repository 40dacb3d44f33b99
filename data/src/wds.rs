//! WebDataset tar shards: samples are consecutive tar members sharing a key
//! (`<key>.jpg`, `<key>.cls`, `<key>.json`, …), as webdataset's `tarfile_to_samples` groups them.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use crate::DataError;

/// Expand brace patterns: `train-{0000..0003}.tar` (zero padding kept) and `{a,b}`.
pub fn expand_braces(pattern: &str) -> Result<Vec<String>, DataError> {
    let Some(open) = pattern.find('{') else { return Ok(vec![pattern.to_string()]) };
    let close = pattern[open..]
        .find('}')
        .map(|c| open + c)
        .ok_or_else(|| DataError::Config(format!("unclosed '{{' in shard pattern '{pattern}'")))?;
    let (head, body, tail) = (&pattern[..open], &pattern[open + 1..close], &pattern[close + 1..]);
    let items: Vec<String> = if let Some((a, b)) = body.split_once("..") {
        let (lo, hi): (u64, u64) = match (a.parse(), b.parse()) {
            (Ok(lo), Ok(hi)) if lo <= hi => (lo, hi),
            _ => return Err(DataError::Config(format!("bad range '{{{body}}}' in shard pattern '{pattern}'"))),
        };
        let width = if a.starts_with('0') && a.len() > 1 { a.len() } else { 0 };
        (lo..=hi).map(|n| format!("{n:0width$}")).collect()
    } else {
        body.split(',').map(str::to_string).collect()
    };
    let rests = expand_braces(tail)?;
    let mut out = Vec::with_capacity(items.len() * rests.len());
    for item in &items {
        for rest in &rests {
            out.push(format!("{head}{item}{rest}"));
        }
    }
    Ok(out)
}

/// A shard spec: a brace pattern, optionally `|<num_samples>` as timm's split strings carry it.
pub fn parse_shard_spec(spec: &str, base: Option<&Path>) -> Result<(Vec<PathBuf>, Option<usize>), DataError> {
    let (pattern, count) = match spec.rsplit_once('|') {
        Some((p, n)) => {
            (p, Some(n.trim().parse().map_err(|_| DataError::Config(format!("bad sample count in '{spec}'")))?))
        }
        None => (spec, None),
    };
    let paths = expand_braces(pattern)?
        .into_iter()
        .map(|p| match base {
            Some(b) if Path::new(&p).is_relative() => b.join(p),
            _ => PathBuf::from(p),
        })
        .collect();
    Ok((paths, count))
}

/// One sample of a shard, undecoded.
#[derive(Debug, Clone)]
pub struct WdsSample {
    pub key: String,
    pub image: Option<Vec<u8>>,
    pub label: Option<usize>,
}

/// Where a sample's label comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelSource {
    /// `<key>.cls`: ASCII decimal class index.
    Cls,
    /// A numeric field of `<key>.json`.
    JsonField(String),
}

/// Split a member name into (key, lower-cased suffix) like webdataset's `base_plus_ext`.
pub fn split_key(name: &str) -> Option<(String, String)> {
    let (dir, base) = match name.rfind('/') {
        Some(i) => (&name[..=i], &name[i + 1..]),
        None => ("", name),
    };
    let dot = base.find('.')?;
    Some((format!("{dir}{}", &base[..dot]), base[dot + 1..].to_lowercase()))
}

const IMAGE_SUFFIXES: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

/// Streams the samples of one shard in file order. A damaged tar ends the stream with an error
/// after the samples read so far; the reader can be dropped and the next shard opened.
pub struct ShardReader {
    path: PathBuf,
    entries: tar::Archive<BufReader<File>>,
    labels: LabelSource,
}

impl ShardReader {
    pub fn open(path: &Path, labels: LabelSource) -> Result<Self, DataError> {
        let file = File::open(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
        Ok(Self {
            path: path.to_path_buf(),
            entries: tar::Archive::new(BufReader::with_capacity(1 << 20, file)),
            labels,
        })
    }

    /// All samples, in order, or the error that stopped the shard (with the samples before it).
    pub fn samples(mut self) -> (Vec<WdsSample>, Option<DataError>) {
        let mut out: Vec<WdsSample> = Vec::new();
        let path = self.path.clone();
        let err = |reason: String| DataError::Shard { path: path.clone(), reason };
        let entries = match self.entries.entries() {
            Ok(e) => e,
            Err(e) => return (out, Some(err(e.to_string()))),
        };
        for entry in entries {
            let mut entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    let e = err(format!("after {} samples: {e}", out.len()));
                    return (out, Some(e));
                }
            };
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = match entry.path() {
                Ok(p) => p.to_string_lossy().into_owned(),
                Err(e) => return (out, Some(err(e.to_string()))),
            };
            let Some((key, suffix)) = split_key(&name) else { continue };
            if name.starts_with("__") || key.is_empty() {
                continue;
            }
            let mut data = Vec::with_capacity(entry.size() as usize);
            if let Err(e) = entry.read_to_end(&mut data) {
                return (out, Some(err(format!("member {name}: {e}"))));
            }
            if out.last().is_none_or(|s| s.key != key) {
                out.push(WdsSample { key: key.clone(), image: None, label: None });
            }
            let sample = out.last_mut().unwrap();
            if IMAGE_SUFFIXES.contains(&suffix.as_str()) && sample.image.is_none() {
                sample.image = Some(data);
            } else if suffix == "cls" && self.labels == LabelSource::Cls {
                sample.label = std::str::from_utf8(&data).ok().and_then(|s| s.trim().parse().ok());
            } else if let (LabelSource::JsonField(field), "json") = (&self.labels, suffix.as_str()) {
                sample.label = serde_json::from_slice::<serde_json::Value>(&data)
                    .ok()
                    .and_then(|v| v.get(field).and_then(|l| l.as_u64()))
                    .map(|l| l as usize);
            }
        }
        (out, None)
    }
}

/// Write a shard: `(key, [(suffix, bytes)])` per sample, members in the given order.
pub fn write_shard(path: &Path, samples: &[(String, Vec<(&str, Vec<u8>)>)]) -> Result<(), DataError> {
    let io = |source| DataError::Io { path: path.to_path_buf(), source };
    let tmp = path.with_extension("tar.tmp");
    let file = File::create(&tmp).map_err(io)?;
    let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
    for (key, members) in samples {
        for (suffix, bytes) in members {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_cksum();
            builder.append_data(&mut header, format!("{key}.{suffix}"), bytes.as_slice()).map_err(io)?;
        }
    }
    let writer = builder.into_inner().map_err(io)?;
    writer.into_inner().map_err(|e| io(e.into_error()))?.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
