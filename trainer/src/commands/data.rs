//! `trainer data prepare` (real test data in both formats) and `trainer data bench`
//! (decode + transform images/s per core, beside `bench/timm_data_bench.py`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use data::decode::Decoder;
use data::rng::Rng;
use data::transform::{EvalTransform, Interpolation, TrainTransform, TrainTransformConfig};

pub fn prepare(source: &Path, out: &Path, samples_per_shard: usize, limit: Option<usize>) -> Result<()> {
    if !source.join("train-images-idx3-ubyte.gz").is_file() {
        bail!(
            "Fashion-MNIST not found in {} (install Debian's dataset-fashion-mnist, or pass --source DIR)",
            source.display()
        );
    }
    let started = Instant::now();
    let p = data::fashion_mnist::prepare(source, out, samples_per_shard, limit)?;
    println!(
        "wrote {} train + {} val images to {} ({} shards) in {:.1}s",
        p.train,
        p.val,
        out.display(),
        p.shards,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// CPU time of this thread (the figure that compares per core on a shared machine).
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

pub struct BenchArgs {
    pub images: PathBuf,
    pub img_size: usize,
    pub auto_augment: String,
    pub eval: bool,
    pub rounds: usize,
}

/// One core: decode + train (or eval) transform to CHW u8, as timm's prefetcher path does.
pub fn bench(args: BenchArgs) -> Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(&args.images)
        .with_context(|| format!("reading {}", args.images.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg")))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no .jpg files in {}", args.images.display());
    }
    let blobs: Vec<Vec<u8>> = files.iter().map(std::fs::read).collect::<std::io::Result<_>>()?;
    let size = args.img_size;
    let mut train = TrainTransform::new(TrainTransformConfig {
        img_size: [size, size],
        auto_augment: args.auto_augment.clone(),
        interpolation: Interpolation::Random,
        ..Default::default()
    })
    .map_err(anyhow::Error::msg)?;
    let eval = EvalTransform {
        img_size: [size, size],
        crop_pct: 0.95,
        crop_mode: "center".into(),
        mean: [0.5; 3],
        std: [0.5; 3],
        interpolation: "bicubic".into(),
    };
    let mut decoder = Decoder::new();
    let mut out = vec![0u8; 3 * size * size];
    let mut rates = Vec::new();
    for round in 0..args.rounds + 1 {
        let (cpu, wall) = (thread_cpu_seconds(), Instant::now());
        for (i, blob) in blobs.iter().enumerate() {
            let failed = |e: String| anyhow::anyhow!("{}: {e}", files[i].display());
            // The loader's worker path: decode only the crop box for train, the whole image for eval.
            if args.eval {
                let img = decoder.decode(blob).map_err(failed)?;
                let crop = eval.resize_and_crop(&img)?;
                data::transform::to_chw_u8(&crop, &mut out);
            } else {
                let mut rng = Rng::for_sample(0, round as u64, i as u64, 0);
                let aug = train.augment_encoded(&mut decoder, blob, &mut rng).map_err(failed)?;
                data::transform::to_chw_u8(&aug, &mut out);
            }
        }
        let cpu = thread_cpu_seconds() - cpu;
        if round > 0 {
            rates.push(blobs.len() as f64 / cpu);
        }
        tracing::info!(round, cpu_s = cpu, wall_s = wall.elapsed().as_secs_f64(), "bench round");
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    println!(
        "{{\"pipeline\": \"rust {}\", \"images\": {}, \"img_size\": {size}, \"auto_augment\": \"{}\", \"img_per_s_per_core\": {median:.1}}}",
        if args.eval { "eval" } else { "train" },
        blobs.len(),
        if args.eval { "" } else { &args.auto_augment }
    );
    Ok(())
}
