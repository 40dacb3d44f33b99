//! Helpers shared by the trainer's integration tests (each test binary uses some of them).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// An empty directory `maxxvit-<suite>-<pid>-<name>` under the temp dir.
pub fn scratch(suite: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("maxxvit-{suite}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Debian's Fashion-MNIST prepared into `out` (ImageFolder + shards), `limit` train and as many
/// val images.
pub fn prepare_fashion_mnist(out: PathBuf, limit: usize) -> PathBuf {
    let src = data::fashion_mnist::default_dir();
    assert!(
        src.join("train-images-idx3-ubyte.gz").is_file(),
        "Fashion-MNIST missing: apt-get install dataset-fashion-mnist"
    );
    data::fashion_mnist::prepare(&src, &out, 1000, Some(limit)).unwrap();
    out
}
