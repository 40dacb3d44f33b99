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

/// One tar member: its name and content.
struct Member {
    name: String,
    data: Vec<u8>,
}

/// A minimal streaming tar reader (ustar / GNU long names / pax paths): owns its file, reads
/// one member at a time, so a 1 GB shard never sits in memory.
struct TarStream {
    reader: BufReader<File>,
    done: bool,
}

fn octal(field: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(field).ok()?.trim_matches(|c: char| c == '\0' || c == ' ');
    if s.is_empty() {
        Some(0)
    } else {
        u64::from_str_radix(s, 8).ok()
    }
}

fn cstr(field: &[u8]) -> String {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

impl TarStream {
    fn read_block(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        let mut filled = 0;
        while filled < buf.len() {
            let n = self.reader.read(&mut buf[filled..])?;
            if n == 0 {
                return if filled == 0 {
                    Ok(false)
                } else {
                    Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "truncated tar block"))
                };
            }
            filled += n;
        }
        Ok(true)
    }

    fn read_data(&mut self, size: u64) -> std::io::Result<Vec<u8>> {
        let padded = size.div_ceil(512) * 512;
        let mut data = vec![0u8; padded as usize];
        if !self.read_block(&mut data)? && size > 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "truncated tar member"));
        }
        data.truncate(size as usize);
        Ok(data)
    }

    fn next_member(&mut self) -> Option<Result<Member, String>> {
        let mut long_name: Option<String> = None;
        loop {
            if self.done {
                return None;
            }
            let mut header = [0u8; 512];
            match self.read_block(&mut header) {
                Ok(true) => {}
                Ok(false) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e.to_string()));
                }
            }
            if header.iter().all(|b| *b == 0) {
                self.done = true;
                return None;
            }
            let stored: u64 = header[148..156].iter().map(|b| *b as u64).sum();
            let computed: u64 =
                header.iter().enumerate().map(|(i, b)| if (148..156).contains(&i) { 32 } else { *b as u64 }).sum();
            if octal(&header[148..156]) != Some(computed) && stored != 0 {
                self.done = true;
                return Some(Err("bad tar header checksum".into()));
            }
            let Some(size) = octal(&header[124..136]) else {
                self.done = true;
                return Some(Err("bad tar member size".into()));
            };
            let data = match self.read_data(size) {
                Ok(d) => d,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e.to_string()));
                }
            };
            let name = {
                let prefix = cstr(&header[345..500]);
                let base = cstr(&header[0..100]);
                if &header[257..262] == b"ustar" && !prefix.is_empty() {
                    format!("{prefix}/{base}")
                } else {
                    base
                }
            };
            match header[156] {
                b'L' => long_name = Some(cstr(&data)),
                b'x' => {
                    long_name = String::from_utf8_lossy(&data)
                        .lines()
                        .find_map(|l| l.split_once(" path=").map(|(_, p)| p.to_string()))
                        .or(long_name)
                }
                b'0' | 0 => return Some(Ok(Member { name: long_name.take().unwrap_or(name), data })),
                _ => long_name = None,
            }
        }
    }
}

/// Streams the samples of one shard in file order. A damaged tar ends the stream with an
/// error after the samples read so far; the caller moves on to the next shard.
pub struct ShardReader {
    path: PathBuf,
    stream: TarStream,
    labels: LabelSource,
    pending: Option<Member>,
}

impl ShardReader {
    pub fn open(path: &Path, labels: LabelSource) -> Result<Self, DataError> {
        let file = File::open(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
        let stream = TarStream { reader: BufReader::with_capacity(1 << 20, file), done: false };
        Ok(Self { path: path.to_path_buf(), stream, labels, pending: None })
    }

    fn add(&self, sample: &mut WdsSample, suffix: &str, data: Vec<u8>) {
        if IMAGE_SUFFIXES.contains(&suffix) && sample.image.is_none() {
            sample.image = Some(data);
        } else if suffix == "cls" && self.labels == LabelSource::Cls {
            sample.label = std::str::from_utf8(&data).ok().and_then(|s| s.trim().parse().ok());
        } else if let (LabelSource::JsonField(field), "json") = (&self.labels, suffix) {
            sample.label = serde_json::from_slice::<serde_json::Value>(&data)
                .ok()
                .and_then(|v| v.get(field).and_then(|l| l.as_u64()))
                .map(|l| l as usize);
        }
    }

    /// The next sample, or the error that ended the shard.
    pub fn next_sample(&mut self) -> Option<Result<WdsSample, DataError>> {
        let mut sample: Option<WdsSample> = None;
        loop {
            let member = match self.pending.take() {
                Some(m) => m,
                None => match self.stream.next_member() {
                    None => return sample.map(Ok),
                    // The partly read sample is the damaged one; it is dropped with the error.
                    Some(Err(reason)) => return Some(Err(DataError::Shard { path: self.path.clone(), reason })),
                    Some(Ok(m)) => m,
                },
            };
            let Some((key, suffix)) = split_key(&member.name) else { continue };
            if member.name.starts_with("__") || key.is_empty() {
                continue;
            }
            match &mut sample {
                Some(s) if s.key != key => {
                    self.pending = Some(member);
                    return sample.map(Ok);
                }
                Some(s) => self.add(s, &suffix, member.data),
                None => {
                    let mut s = WdsSample { key, image: None, label: None };
                    self.add(&mut s, &suffix, member.data);
                    sample = Some(s);
                }
            }
        }
    }

    /// Every sample of the shard, and the error that ended it early, if any.
    pub fn samples(mut self) -> (Vec<WdsSample>, Option<DataError>) {
        let mut out = Vec::new();
        while let Some(next) = self.next_sample() {
            match next {
                Ok(s) => out.push(s),
                Err(e) => return (out, Some(e)),
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
