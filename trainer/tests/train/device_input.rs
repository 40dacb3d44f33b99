//! Batches as a GPU run gets them (`u8`, normalised, erased and mixed on the device) against
//! batches as the CPU run gets them (normalised, erased and mixed on the host): the same
//! images, on burn-flex bit for bit, and on wgpu (lavapipe) within float rounding. Part of the
//! `train` test binary.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::backend::Backend;
use data::folder::ImageFolder;
use data::loader::{Batch, Loader, LoaderConfig, Output, Pipeline, Source};
use data::mixup::{plan_mix, Mix, MixupConfig};
use data::rng::Rng;
use data::transform::TrainTransformConfig;

/// Two classes of real photos (the data crate's JPEG fixtures), several copies each.
fn photo_folder() -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/tests/fixtures/jpeg");
    let dir = std::env::temp_dir().join(format!("maxxvit-input-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.ends_with(".jpg") {
            continue;
        }
        let class = if name.starts_with("chelsea") { "cat" } else { "coffee" };
        std::fs::create_dir_all(dir.join(class)).unwrap();
        for copy in 0..3 {
            std::fs::copy(&path, dir.join(class).join(format!("{copy}_{name}"))).unwrap();
        }
    }
    dir
}

fn loader(dir: &Path, output: Output) -> Loader {
    let transform = TrainTransformConfig {
        img_size: [40, 48],
        re_prob: 0.7,
        re_mode: "pixel".into(),
        re_count: 2,
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
        ..Default::default()
    };
    let folder = Arc::new(ImageFolder::open(dir, None).unwrap());
    let cfg = LoaderConfig { batch_size: 4, workers: 2, seed: 5, output, ..Default::default() };
    Loader::new(Source::Folder(folder), Pipeline::Train(transform), cfg).unwrap()
}

fn batches(loader: &Loader) -> Vec<Batch> {
    (0..3).flat_map(|epoch| loader.epoch(epoch, 0).map(Result::unwrap)).collect()
}

/// Each batch's images through `trainer::input::images` on `B`, with the mixing drawn per batch.
fn through<B: Backend>(loader: &Loader, device: &B::Device) -> (Vec<Vec<f32>>, Vec<Mix>, usize) {
    let mixup = MixupConfig { mixup_alpha: 0.8, cutmix_alpha: 1.0, prob: 0.8, ..Default::default() };
    let (mut out, mut mixes, mut erasures) = (vec![], vec![], 0);
    for batch in batches(loader) {
        let mut rng = Rng::for_sample(5, batch.epoch, batch.step as u64, 2);
        let (mix, _) = plan_mix(&mixup, &batch.labels, 2, [batch.shape[2], batch.shape[3]], &mut rng);
        erasures += batch.erasures.len();
        let x = trainer::input::images::<B>(batch, loader.pipeline().normalization(), mix, device);
        out.push(x.into_data().to_vec::<f32>().unwrap());
        mixes.push(mix);
    }
    (out, mixes, erasures)
}

#[test]
fn images_normalised_erased_and_mixed_on_the_device_equal_the_host_path() {
    let dir = photo_folder();
    let (host_loader, device_loader) = (loader(&dir, Output::F32), loader(&dir, Output::U8));
    let cpu = Default::default();
    let (host, mixes, host_erasures) = through::<burn::backend::Flex>(&host_loader, &cpu);
    let (on_device, device_mixes, erasures) = through::<burn::backend::Flex>(&device_loader, &cpu);
    // The host path erases inside the loader; the u8 path hands the boxes over.
    assert_eq!((host_erasures, device_mixes), (0, mixes.clone()));
    // Every path was exercised: plain, blended and cut batches, erased rows.
    assert!(mixes.iter().any(|m| matches!(m, Mix::Blend { .. })), "{mixes:?}");
    assert!(mixes.iter().any(|m| matches!(m, Mix::Cut { .. })), "{mixes:?}");
    assert!(erasures >= 4, "{erasures} erasing boxes");
    assert_eq!(host.len(), on_device.len());
    for (i, (a, b)) in host.iter().zip(&on_device).enumerate() {
        assert!(a == b, "batch {i} ({:?}): the u8 path differs from the host path on flex", mixes[i]);
    }
    #[cfg(feature = "wgpu")]
    {
        trainer::device::check_wgpu().unwrap();
        let gpu = burn::backend::wgpu::WgpuDevice::DefaultDevice;
        let (on_gpu, _, _) = through::<burn::backend::Wgpu>(&device_loader, &gpu);
        for (i, (a, b)) in host.iter().zip(&on_gpu).enumerate() {
            let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-5, "batch {i} ({:?}): wgpu differs from the host path by {worst}", mixes[i]);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
