//! ImageFolder: `root/<class>/**/<image>`, as timm's `find_images_and_targets` reads it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::DataError;

/// File extensions timm's folder reader accepts (case-insensitive), plus WebP.
pub const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

/// timm's `natural_key`: digit runs compare as numbers, the rest case-insensitively.
pub fn natural_key(s: &str) -> Vec<(u8, u128, String)> {
    let mut key = Vec::new();
    let lower = s.to_lowercase();
    let mut chars = lower.chars().peekable();
    while let Some(&c) = chars.peek() {
        let digit = c.is_ascii_digit();
        let mut run = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_ascii_digit() != digit {
                break;
            }
            run.push(c);
            chars.next();
        }
        key.push(if digit { (0, run.parse().unwrap_or(u128::MAX), run) } else { (1, 0, run) });
    }
    key
}

/// Class names from a class-list file (one per line, e.g. timm's `imagenet_synsets.txt`).
pub fn read_class_list(path: &Path) -> Result<Vec<String>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect())
}

#[derive(Debug, Clone)]
pub struct ImageFolder {
    pub root: PathBuf,
    /// Class names; a sample's label is its index here.
    pub classes: Vec<String>,
    pub samples: Vec<(PathBuf, usize)>,
}

impl ImageFolder {
    /// Scan `root`. Classes are the natural-sorted leaf folder names, or `class_list` when given
    /// (images of classes not in it are left out, as timm does).
    pub fn open(root: &Path, class_list: Option<&[String]>) -> Result<Self, DataError> {
        if !root.is_dir() {
            return Err(DataError::Io {
                path: root.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "image folder not found"),
            });
        }
        let mut files = Vec::new();
        walk(root, &mut files)?;
        let leaf = |p: &Path| p.parent().and_then(|d| d.file_name()).map(|n| n.to_string_lossy().into_owned());
        let classes: Vec<String> = match class_list {
            Some(list) => list.to_vec(),
            None => {
                let mut names: Vec<String> = files.iter().filter_map(|f| leaf(f)).collect();
                names.sort_by_key(|n| natural_key(n));
                names.dedup();
                names
            }
        };
        let index: HashMap<&str, usize> = classes.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
        let mut samples: Vec<(PathBuf, usize)> = files
            .into_iter()
            .filter_map(|f| {
                let label = *index.get(leaf(&f)?.as_str())?;
                Some((f, label))
            })
            .collect();
        samples.sort_by_cached_key(|(p, _)| natural_key(&p.to_string_lossy()));
        Ok(Self { root: root.to_path_buf(), classes, samples })
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The encoded bytes and label of sample `i`.
    pub fn read(&self, i: usize) -> Result<(Vec<u8>, usize), DataError> {
        let (path, label) = &self.samples[i];
        let bytes = std::fs::read(path).map_err(|source| DataError::Io { path: path.clone(), source })?;
        Ok((bytes, *label))
    }

    /// Samples per class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for (_, label) in &self.samples {
            counts[*label] += 1;
        }
        counts
    }
}

/// The image files (by extension, [`IMAGE_EXTENSIONS`]) under `dir`, recursively, in path order.
pub fn image_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    files.sort();
    Ok(files)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    let entries = std::fs::read_dir(dir).map_err(|source| DataError::Io { path: dir.to_path_buf(), source })?;
    for entry in entries {
        let path = entry.map_err(|source| DataError::Io { path: dir.to_path_buf(), source })?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if path
            .extension()
            .map(|e| e.to_string_lossy().to_lowercase())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
        {
            out.push(path);
        }
    }
    Ok(())
}
