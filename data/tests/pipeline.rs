//! The input pipeline on real data: Fashion-MNIST prepared as an ImageFolder and as WebDataset
//! shards (Debian `dataset-fashion-mnist`; `.ci/run` installs it, or set
//! `MAXXVIT_FASHION_MNIST_DIR`).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use data::decode::decode_rgb;
use data::fashion_mnist::{self, class_dir};
use data::folder::ImageFolder;
use data::loader::{Loader, LoaderConfig, Output, Pipeline, Source};
use data::sampler::{IndexSampler, ShardPlan};
use data::transform::{EvalTransform, Interpolation, TrainTransformConfig};
use data::wds::{expand_braces, write_shard, LabelSource, ShardReader};

struct Prepared {
    dir: PathBuf,
}

fn prepared() -> &'static Prepared {
    static ONCE: OnceLock<Prepared> = OnceLock::new();
    ONCE.get_or_init(|| {
        let src = fashion_mnist::default_dir();
        assert!(
            src.join("train-images-idx3-ubyte.gz").is_file(),
            "Fashion-MNIST not found in {} (apt-get install dataset-fashion-mnist, or set MAXXVIT_FASHION_MNIST_DIR)",
            src.display()
        );
        let dir = std::env::temp_dir().join(format!("maxxvit-fmnist-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let p = fashion_mnist::prepare(&src, &dir, 2500, None).unwrap();
        assert_eq!((p.train, p.val), (60_000, 10_000));
        Prepared { dir }
    })
}

fn folder(split: &str) -> Arc<ImageFolder> {
    Arc::new(ImageFolder::open(&prepared().dir.join("imagefolder").join(split), None).unwrap())
}

fn shards(split: &str) -> (Vec<PathBuf>, usize) {
    fashion_mnist::read_info(&prepared().dir.join("wds/_info.json"), split).unwrap()
}

fn eval_pipeline(size: usize) -> Pipeline {
    Pipeline::Eval(EvalTransform {
        img_size: [size, size],
        crop_pct: 1.0,
        crop_mode: "center".into(),
        mean: [0.5; 3],
        std: [0.5; 3],
        interpolation: "bilinear".into(),
    })
}

#[test]
fn both_readers_give_the_same_samples_and_the_data_sets_class_counts() {
    for (split, per_class) in [("train", 6000), ("val", 1000)] {
        let f = folder(split);
        let by_path: std::collections::HashMap<&PathBuf, usize> = f.samples.iter().map(|(p, l)| (p, *l)).collect();
        assert_eq!(f.classes, (0..10).map(class_dir).collect::<Vec<_>>());
        assert_eq!(f.class_counts(), vec![per_class; 10], "{split}");
        let (paths, n) = shards(split);
        let mut seen = 0;
        let mut wds_counts = vec![0usize; 10];
        for path in &paths {
            let (samples, err) = ShardReader::open(path, LabelSource::Cls).unwrap().samples();
            assert!(err.is_none(), "{err:?}");
            for s in samples {
                let idx: usize = s.key.rsplit('_').next().unwrap().parse().unwrap();
                let label = s.label.unwrap();
                wds_counts[label] += 1;
                // Same sample through the folder reader: same label, same decoded pixels.
                let path = f.root.join(class_dir(label)).join(format!("{idx:05}.jpg"));
                assert_eq!(by_path.get(&path), Some(&label), "{}", s.key);
                let a = decode_rgb(&std::fs::read(&path).unwrap()).unwrap();
                let b = decode_rgb(s.image.as_ref().unwrap()).unwrap();
                assert_eq!(a, b, "{}", s.key);
                seen += 1;
            }
        }
        assert_eq!(seen, n);
        assert_eq!(wds_counts, vec![per_class; 10]);
    }
    // A JSON label field works as well as `.cls`.
    let (paths, _) = shards("val");
    let (samples, _) = ShardReader::open(&paths[0], LabelSource::JsonField("label".into())).unwrap().samples();
    assert!(samples.iter().all(|s| s.label.is_some()));
}

#[test]
fn index_sampling_is_independent_of_the_number_of_ranks() {
    let len = 1000;
    let global = 12;
    let reference = IndexSampler::new(len, 7, true, global, 0, 1).unwrap();
    let order = reference.epoch_order(3);
    assert_ne!(order, reference.epoch_order(4), "epochs reshuffle");
    for world in [1, 2, 3] {
        let mut seen = HashSet::new();
        for step in 0..reference.steps_per_epoch() {
            let mut step_samples: Vec<usize> = vec![];
            for rank in 0..world {
                let s = IndexSampler::new(len, 7, true, global, rank, world).unwrap();
                step_samples.extend(s.rank_batch(&s.epoch_order(3), step));
            }
            assert_eq!(step_samples, reference.rank_batch(&order, step), "world {world}, step {step}");
            for i in step_samples {
                assert!(seen.insert(i), "sample {i} twice in one epoch (world {world})");
            }
        }
        assert_eq!(seen.len(), reference.steps_per_epoch() * global);
    }
}

#[test]
fn shard_plans_cover_every_shard_once_per_epoch() {
    for world in [1, 2, 3] {
        for workers in [1, 2] {
            let mut all = vec![];
            for rank in 0..world {
                for w in 0..workers {
                    let plan = ShardPlan { num_shards: 24, seed: 1, shuffle: true, rank, world, workers };
                    all.extend(plan.worker_shards(5, w));
                }
            }
            all.sort();
            assert_eq!(all, (0..24).collect::<Vec<_>>(), "world {world} workers {workers}");
        }
    }
}

fn collect(loader: &Loader, epoch: u64, start: usize) -> Vec<(usize, Vec<String>, Vec<usize>)> {
    loader.epoch(epoch, start).map(|b| b.unwrap()).map(|b| (b.step, b.ids, b.labels)).collect()
}

#[test]
fn folder_loader_is_deterministic_across_workers_and_resumes_mid_epoch() {
    // 2,000 real images (a subset folder keeps the test quick).
    let full = folder("train");
    let subset = Arc::new(ImageFolder { samples: full.samples[..2000].to_vec(), ..(*full).clone() });
    let train =
        TrainTransformConfig { img_size: [32, 32], interpolation: Interpolation::Bilinear, ..Default::default() };
    let make = |workers: usize, rank: usize, world: usize| {
        let cfg = LoaderConfig { batch_size: 50 / world, workers, seed: 9, rank, world, ..Default::default() };
        Loader::new(Source::Folder(subset.clone()), Pipeline::Train(train.clone()), cfg).unwrap()
    };
    let one = make(1, 0, 1);
    assert_eq!(one.steps_per_epoch(), Some(40));
    let batches: Vec<_> = one.epoch(0, 0).map(|b| b.unwrap()).collect();
    assert_eq!(batches.len(), 40);
    // Same pixels with three workers: augmentation depends on (seed, epoch, sample), not the worker.
    let three: Vec<_> = make(3, 0, 1).epoch(0, 0).map(|b| b.unwrap()).collect();
    assert_eq!(batches, three);
    // Labels agree with the folder reader.
    for b in &batches {
        for (id, label) in b.ids.iter().zip(&b.labels) {
            assert_eq!(subset.samples[id.parse::<usize>().unwrap()].1, *label);
        }
    }
    // Resume at step 17 gives exactly the remaining batches.
    assert_eq!(collect(&one, 0, 17), collect(&one, 0, 0)[17..].to_vec());
    // Two ranks split each global batch.
    let (r0, r1) = (collect(&make(2, 0, 2), 0, 0), collect(&make(2, 1, 2), 0, 0));
    for ((a, b), whole) in r0.iter().zip(&r1).zip(&batches) {
        let joined: Vec<String> = a.1.iter().chain(&b.1).cloned().collect();
        assert_eq!(joined, whole.ids);
    }
}

#[test]
fn shard_loader_gives_equal_counts_per_rank_and_resumes() {
    let (paths, n) = shards("val"); // 4 shards of 2,500
    let make = |rank: usize, world: usize, workers: usize| {
        let cfg = LoaderConfig {
            batch_size: 64,
            workers,
            seed: 3,
            rank,
            world,
            shuffle_buffer: (256, 64),
            ..Default::default()
        };
        Loader::new(
            Source::Shards { shards: paths.clone(), num_samples: n, labels: LabelSource::Cls },
            eval_pipeline(32),
            cfg,
        )
        .map(|l| l)
        .unwrap()
    };
    for world in [1, 2] {
        let mut union = HashSet::new();
        let mut per_rank = vec![];
        for rank in 0..world {
            let loader = make(rank, world, 2);
            let batches = collect(&loader, 1, 0);
            assert_eq!(Some(batches.len()), loader.steps_per_epoch());
            per_rank.push(batches.iter().map(|b| b.1.len()).sum::<usize>());
            for b in &batches {
                union.extend(b.1.iter().cloned());
            }
        }
        assert!(per_rank.iter().all(|c| *c == per_rank[0]), "equal counts per rank: {per_rank:?}");
        // As with timm's `with_epoch`, the epoch ends on a sample count: what is still in the
        // shuffle buffers (≤ ranks × workers × 256 here) waits for the next epoch.
        assert!(union.len() >= n - world * 2 * 256 && union.len() <= n, "world {world}: {} of {n} seen", union.len());
    }
    let loader = make(0, 1, 2);
    let all = collect(&loader, 2, 0);
    assert_eq!(collect(&loader, 2, 5), all[5..].to_vec(), "resume mid-epoch on the same topology");
    assert_ne!(collect(&loader, 3, 0)[0].1, all[0].1, "a new epoch reshuffles");
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("maxxvit-data-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn corrupt_samples_are_skipped_and_counted_without_shifting_labels() {
    let f = folder("val");
    let root = scratch("corrupt");
    // 40 good images over 2 classes plus four bad files.
    let mut expect = BTreeMap::new();
    let two_classes =
        f.samples.iter().filter(|(_, l)| *l == 0).take(20).chain(f.samples.iter().filter(|(_, l)| *l == 1).take(20));
    for (i, (path, label)) in two_classes.enumerate() {
        let dst = root.join(class_dir(*label)).join(format!("good{i:02}.jpg"));
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(path, &dst).unwrap();
        expect.insert(dst.file_name().unwrap().to_string_lossy().into_owned(), *label);
    }
    let good = std::fs::read(&f.samples[0].0).unwrap();
    let c0 = root.join(class_dir(0));
    std::fs::write(c0.join("bad_truncated.jpg"), &good[..good.len() / 2]).unwrap();
    std::fs::write(c0.join("bad_empty.jpg"), b"").unwrap();
    std::fs::write(c0.join("bad_text.png"), b"this is not an image").unwrap();
    std::fs::write(root.join(class_dir(1)).join("bad_wrong_ext.jpeg"), b"GIF89a\x01\x00\x01\x00").unwrap();

    let folder = Arc::new(ImageFolder::open(&root, None).unwrap());
    assert_eq!(folder.len(), 44);
    let cfg = LoaderConfig { batch_size: 44, workers: 2, train: false, ..Default::default() };
    let loader = Loader::new(Source::Folder(folder.clone()), eval_pipeline(32), cfg).unwrap();
    let batches: Vec<_> = loader.epoch(0, 0).map(|b| b.unwrap()).collect();
    let got: usize = batches.iter().map(|b| b.labels.len()).sum();
    assert_eq!(got, 40);
    assert_eq!(loader.corrupt().count(), 4, "{:?}", loader.corrupt().entries());
    assert!(loader.corrupt().entries().iter().any(|e| e.contains("bad_truncated.jpg")));
    for b in &batches {
        assert_eq!(b.shape[0], b.labels.len());
        for (id, label) in b.ids.iter().zip(&b.labels) {
            let name =
                folder.samples[id.parse::<usize>().unwrap()].0.file_name().unwrap().to_string_lossy().into_owned();
            assert_eq!(expect[&name], *label, "{name}");
        }
    }

    // Shards: a good shard, one whose second half is cut off mid-member, and one missing file.
    let (paths, _) = shards("val");
    let (samples, _) = ShardReader::open(&paths[0], LabelSource::Cls).unwrap().samples();
    let members = |s: &data::wds::WdsSample| {
        vec![("jpg", s.image.clone().unwrap()), ("cls", s.label.unwrap().to_string().into_bytes())]
    };
    let shard_dir = scratch("corrupt-shards");
    let good_shard: Vec<_> = samples[..30].iter().map(|s| (s.key.clone(), members(s))).collect();
    write_shard(&shard_dir.join("s-0.tar"), &good_shard).unwrap();
    let mut bad_shard: Vec<_> = samples[30..60].iter().map(|s| (s.key.clone(), members(s))).collect();
    bad_shard[3].1[0].1 = b"garbage, not a jpeg".to_vec();
    write_shard(&shard_dir.join("s-1.tar"), &bad_shard).unwrap();
    let bytes = std::fs::read(shard_dir.join("s-1.tar")).unwrap();
    std::fs::write(shard_dir.join("s-1.tar"), &bytes[..bytes.len() * 2 / 3]).unwrap();
    let shard_paths: Vec<PathBuf> = expand_braces(&format!("{}/s-{{0..2}}.tar", shard_dir.display()))
        .unwrap()
        .into_iter()
        .map(PathBuf::from)
        .collect();
    let cfg = LoaderConfig { batch_size: 16, workers: 1, train: false, ..Default::default() };
    let loader = Loader::new(
        Source::Shards { shards: shard_paths, num_samples: 60, labels: LabelSource::Cls },
        eval_pipeline(32),
        cfg,
    )
    .unwrap();
    let batches: Vec<_> = loader.epoch(0, 0).map(|b| b.unwrap()).collect();
    let keys: Vec<String> = batches.iter().flat_map(|b| b.ids.clone()).collect();
    let labels: Vec<usize> = batches.iter().flat_map(|b| b.labels.clone()).collect();
    // All 30 of the good shard, the readable part of the damaged one minus its garbage image.
    assert!(keys.len() >= 30 + 10 && keys.len() < 60, "{} samples", keys.len());
    assert!(!keys.contains(&samples[33].key));
    for (k, l) in keys.iter().zip(&labels) {
        let original = samples.iter().find(|s| &s.key == k).unwrap();
        assert_eq!(original.label.unwrap(), *l);
    }
    let entries = loader.corrupt().entries().join("\n");
    assert!(entries.contains(&samples[33].key), "{entries}");
    assert!(entries.contains("s-1.tar") && entries.contains("s-2.tar"), "{entries}");
}

#[test]
fn brace_patterns_expand_like_webdataset() {
    assert_eq!(expand_braces("a-{000..002}.tar").unwrap(), vec!["a-000.tar", "a-001.tar", "a-002.tar"]);
    assert_eq!(expand_braces("{x,y}-{1..2}").unwrap(), vec!["x-1", "x-2", "y-1", "y-2"]);
    assert_eq!(expand_braces("s{8..10}").unwrap(), vec!["s8", "s9", "s10"]);
    assert!(expand_braces("a-{3..1}").is_err());
    assert!(expand_braces("a-{1..2").is_err());
    let _ = Path::new("");
    let _ = Output::U8;
}
