//! The `trainer` binary end to end.

use std::path::Path;
use std::process::Command;

use model::golden::{case_dirs, golden_dir, read_tensors, rel_l2, OUTPUT_TOL};

fn trainer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trainer"))
}

mod common;

fn scratch(name: &str) -> std::path::PathBuf {
    common::scratch("cli", name)
}

#[test]
fn predict_on_golden_tensors_reproduces_timms_eval_outputs() {
    let out_dir = scratch("predict");
    let cases = case_dirs(&golden_dir()).unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let out = out_dir.join(format!("{}.safetensors", case.file_name().unwrap().to_string_lossy()));
        let status = trainer()
            .args(["predict", "--model-config"])
            .arg(case.join("model.json"))
            .arg("--weights")
            .arg(case.join("weights.safetensors"))
            .arg("--tensor-input")
            .arg(case.join("io.safetensors"))
            .arg("--save")
            .arg(&out)
            .output()
            .unwrap();
        assert!(status.status.success(), "{}: {}", case.display(), String::from_utf8_lossy(&status.stderr));
        let stdout = String::from_utf8_lossy(&status.stdout);
        assert_eq!(stdout.lines().count(), 2, "one top-5 line per input:\n{stdout}");
        let ours = read_tensors(&out).unwrap();
        let timm = read_tensors(&case.join("io.safetensors")).unwrap();
        for (name, reference) in
            [("logits", "eval.logits"), ("pre_logits", "eval.pre_logits"), ("features", "eval.features")]
        {
            assert_eq!(ours[name].shape, timm[reference].shape, "{name}");
            let err = rel_l2(&ours[name].f32, &timm[reference].f32, 0.0);
            assert!(err < OUTPUT_TOL, "{}: {name} rel err {err:.2e}", case.display());
        }
    }
}

fn stderr_of(args: &[&str]) -> String {
    let out = trainer().args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn predict_failures_name_the_file() {
    let case = case_dirs(&golden_dir()).unwrap().remove(0);
    let config = case.join("model.json");
    let garbage = scratch("bad").join("garbage.safetensors");
    std::fs::write(&garbage, b"definitely not safetensors").unwrap();
    let err = stderr_of(&[
        "predict",
        "--model-config",
        config.to_str().unwrap(),
        "--weights",
        garbage.to_str().unwrap(),
        "--tensor-input",
        case.join("io.safetensors").to_str().unwrap(),
    ]);
    assert!(err.contains("garbage.safetensors") && err.contains("not a valid safetensors"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let err = stderr_of(&["predict", "--model", "no_such_model", "--weights", "x.safetensors", "img.png"]);
    assert!(err.contains("unknown model 'no_such_model'"), "{err}");
}

#[test]
fn models_lists_all_58_and_inspect_prints_timm_keys() {
    let out = trainer().arg("models").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 59, "header + 58 models");
    let base = text.lines().find(|l| l.starts_with("maxxvitv2_rmlp_base_rw_224 ")).unwrap();
    assert!(base.contains("116.09") && base.contains("24.15"), "{base}");

    let out = trainer().args(["inspect", "maxxvitv2_nano_rw_256"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let keys: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(keys.len(), 182, "spec §4.4 lists 182 entries");
    assert_eq!(keys[0], "stem.conv1.weight\t[48, 3, 3, 3]\tF32");
    assert!(text.contains("stages.3.blocks.0.attn_grid.attn.rel_pos.relative_position_bias_table\t[225, 24]\tF32"));
    let _ = Path::new("");
}

#[test]
fn config_layers_file_environment_and_set_and_rejects_unknown_keys() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = trainer()
        .args(["config", "--config", "configs/smoke.toml", "--set", "optimizer.lr=0.5", "--set", "model.num_classes=7"])
        .env("MAXXVIT_TRAINING__BATCH_SIZE", "48")
        .env("MAXXVIT_SOME_TOOL_DIR", "/ignored")
        .current_dir(&repo)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let cfg: toml::Table = toml::from_str(text.split("# config hash").next().unwrap()).unwrap();
    assert_eq!(cfg["training"]["batch_size"].as_integer(), Some(48), "environment override");
    assert_eq!(cfg["optimizer"]["lr"].as_float(), Some(0.5), "--set override");
    assert_eq!(cfg["model"]["num_classes"].as_integer(), Some(7));
    assert_eq!(cfg["optimizer"]["weight_decay"].as_float(), Some(0.05), "file value kept");

    let err = trainer()
        .args(["config", "--config", "configs/smoke.toml", "--set", "optimizer.lrr=1"])
        .current_dir(&repo)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&err.stderr);
    assert!(err.contains("lrr") && err.contains("smoke.toml"), "{err}");
    let err = trainer()
        .args(["config", "--config", "configs/smoke.toml"])
        .env("MAXXVIT_TRAINIG__SEED", "1")
        .current_dir(&repo)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&err.stderr).contains("TRAINIG"));
}

#[test]
fn golden_check_passes_on_cpu_and_the_gpu_script_stops_cleanly_without_a_gpu() {
    let out = trainer().args(["golden-check", "--device", "cpu"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["failures"].as_u64(), Some(0));
    assert_eq!(summary["cases"].as_u64(), Some(case_dirs(&golden_dir()).unwrap().len() as u64));
    // The bf16 autocast check the GPU script runs on CUDA, here on the CPU backend.
    let out = trainer().args(["golden-check", "--device", "cpu", "--amp", "bf16"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["check"], "golden-bf16-autocast");
    assert_eq!(summary["failures"].as_u64(), Some(0));
    assert!(summary["worst_logits_rel_l2"].as_f64().unwrap() > 0.0, "{stdout}");

    // No nvidia-smi on PATH: the GPU check script says so and exits 3 at once, not hanging.
    let dir = scratch("gpu-check");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../launch/gpu_check.sh");
    let started = std::time::Instant::now();
    let out = Command::new("bash")
        .arg(script)
        .env("PATH", "/usr/bin:/bin")
        .env("OUT", &dir)
        .env("TRAINER_BIN", env!("CARGO_BIN_EXE_trainer"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("no GPU visible"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

/// Multiply the floats of `tensor` in a safetensors file by `factor`, in place.
fn scale_tensor(path: &Path, tensor: &str, factor: f32) {
    let mut bytes = std::fs::read(path).unwrap();
    let (start, len) = {
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let view = file.tensor(tensor).unwrap();
        (view.data().as_ptr() as usize - bytes.as_ptr() as usize, view.data().len())
    };
    for chunk in bytes[start..start + len].chunks_exact_mut(4) {
        let v = f32::from_le_bytes(chunk.try_into().unwrap()) * factor;
        chunk.copy_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn golden_check_fails_naming_a_sabotaged_tensor() {
    // The smallest case, copied with one stage output and one gradient off by more than their
    // tolerances (1e-4, 1e-3). On the CPU backend: the comparison and its report are the same code
    // on every device, and CI checks every case on wgpu (.ci/run), where this case alone cost
    // ~4 minutes of lavapipe pipeline builds in the test suite.
    let source = golden_dir().join("coatnet_rmlp_nano_rw");
    let dir = scratch("sabotaged").join("coatnet_rmlp_nano_rw");
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["model.json", "weights.safetensors", "io.safetensors"] {
        std::fs::copy(source.join(file), dir.join(file)).unwrap();
    }
    scale_tensor(&dir.join("io.safetensors"), "eval.stage.1", 1.001);
    scale_tensor(&dir.join("io.safetensors"), "grad.stem.conv1.weight", 1.05);
    let out = trainer().args(["golden-check", "--device", "cpu", "--dir"]).arg(dir.parent().unwrap()).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "a sabotaged fixture passed:\n{stdout}");
    assert!(stdout.contains("FAILED"), "{stdout}");
    for tensor in ["eval.stage.1", "grad.stem.conv1.weight"] {
        let line =
            stderr.lines().find(|l| l.contains(tensor)).unwrap_or_else(|| panic!("{tensor} not named:\n{stderr}"));
        assert!(line.contains("relative error"), "{line}");
    }
    // Only the two sabotaged tensors fail: the rest of the case is within its tolerances.
    assert!(stderr.contains("2 of "), "{stderr}");
}

/// A Hugging Face hub cache holding `timm/test_coatnet.untrained` as `huggingface-cli download`
/// leaves it (refs/main → snapshots/<commit>/{config.json, model.safetensors}), with random
/// weights also written to `weights.safetensors` beside it. timm's config.json shape
/// (`save_config_for_hf`, timm 1.0.31) with a preprocessing different from the registry's.
fn hub_cache(root: &Path) -> std::path::PathBuf {
    use burn::backend::Flex;
    let commit = "4b1d7f0c9e2a3d5f6b7a8c9d0e1f2a3b4c5d6e7f";
    let repo = root.join("hub").join("models--timm--test_coatnet.untrained");
    let snapshot = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join("main"), commit).unwrap();
    let spec = trainer::model_spec::ModelSpec::from_name("test_coatnet").unwrap();
    let model = model::MaxxVit::<Flex>::new(&spec.cfg, &spec.args, &Default::default()).unwrap();
    model::save_safetensors(&model, &root.join("weights.safetensors"), model::SaveDtype::F32).unwrap();
    std::fs::copy(root.join("weights.safetensors"), snapshot.join("model.safetensors")).unwrap();
    let config = serde_json::json!({
        "architecture": "test_coatnet",
        "num_classes": 1000,
        "num_features": 256,
        "global_pool": "avg",
        "pretrained_cfg": {
            "tag": "untrained", "custom_load": false, "input_size": [3, 160, 160],
            "fixed_input_size": true, "interpolation": "bilinear", "crop_pct": 0.875,
            "crop_mode": "center", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
            "num_classes": 1000, "pool_size": [5, 5], "first_conv": "stem.conv1", "classifier": "head.fc"
        }
    });
    std::fs::write(snapshot.join("config.json"), serde_json::to_string_pretty(&config).unwrap()).unwrap();
    root.join("hub")
}

fn write_images(dir: &Path, names: &[&str]) -> Vec<std::path::PathBuf> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let img = image::RgbImage::from_fn(90 + 20 * i as u32, 120, |x, y| {
                image::Rgb([(x * 5 + 40 * i as u32) as u8, (y * 3) as u8, ((x ^ y) * 7) as u8])
            });
            img.save(&path).unwrap();
            path
        })
        .collect()
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn hub_cache_weights_predict_with_imagenet_names_and_give_stage_features_and_folder_embeddings() {
    let root = scratch("hub");
    let cache = hub_cache(&root);
    let images = write_images(&root.join("images"), &["b/two.png", "a/one.png", "c.png"]);
    let sorted = [&images[1], &images[0], &images[2]]; // a/one.png, b/two.png, c.png
    let hub = || {
        let mut c = trainer();
        c.env("HF_HUB_CACHE", &cache).env_remove("HF_HOME");
        c
    };

    // predict from the cache: the config's preprocessing (not the registry's), built-in names.
    let saved = root.join("pred.safetensors");
    let stdout = run_ok(
        hub()
            .args(["predict", "--pretrained", "hf-hub:timm/test_coatnet.untrained", "--save"])
            .arg(&saved)
            .args(sorted),
    );
    let names: Vec<&str> = include_str!("../assets/imagenet1k_classes.txt").lines().collect();
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    for line in stdout.lines() {
        let (_, top) = line.rsplit_once(".png: ").unwrap();
        for entry in top.split("), ") {
            let (index, rest) = entry.split_once(' ').unwrap();
            let name = rest.rsplit_once(" (").unwrap().0;
            assert_eq!(name, names[index.parse::<usize>().unwrap()], "{line}");
        }
    }
    // The same weights by file with the same preprocessing flags give the same logits; the
    // registry's preprocessing (bicubic, crop 0.95, mean 0.5) gives different ones.
    let by_file = |dir: &Path, config: &Path, out: &Path| {
        run_ok(
            trainer()
                .args(["predict", "--model-config"])
                .arg(config)
                .arg("--weights")
                .arg(dir.join("weights.safetensors"))
                .arg("--save")
                .arg(out)
                .args(sorted),
        );
    };
    let snapshot =
        cache.join("models--timm--test_coatnet.untrained/snapshots/4b1d7f0c9e2a3d5f6b7a8c9d0e1f2a3b4c5d6e7f");
    by_file(&root, &snapshot.join("config.json"), &root.join("file.safetensors"));
    let registry = root.join("registry.json");
    std::fs::write(&registry, r#"{"architecture": "test_coatnet"}"#).unwrap();
    by_file(&root, &registry, &root.join("registry.safetensors"));
    let [hubs, files, reg] =
        ["pred", "file", "registry"].map(|f| read_tensors(&root.join(format!("{f}.safetensors"))).unwrap());
    assert_eq!(rel_l2(&hubs["logits"].f32, &files["logits"].f32, 0.0), 0.0);
    assert!(rel_l2(&hubs["logits"].f32, &reg["logits"].f32, 0.0) > 1e-3, "the config's preprocessing is used");

    // features: stem + 4 stages, shapes from feature_info (test_coatnet at 160 px).
    let feats = root.join("features.safetensors");
    let stdout = run_ok(
        hub()
            .args(["features", "--pretrained", "hf-hub:timm/test_coatnet.untrained", "--batch-size", "2", "--save"])
            .arg(&feats)
            .args(sorted),
    );
    let maps = read_tensors(&feats).unwrap();
    assert_eq!(stdout.lines().filter(|l| l.contains(": [3, ")).count(), 5, "{stdout}");
    for (name, reduction) in [("stem", 2), ("stages.0", 4), ("stages.1", 8), ("stages.2", 16), ("stages.3", 32)] {
        let shape = &maps[name].shape;
        assert_eq!((shape[0], shape[2], shape[3]), (3, 160 / reduction, 160 / reduction), "{name}");
        assert!(stdout.contains(&format!("{name}: {shape:?}")), "{stdout}");
    }
    assert_eq!(maps["stages.3"].shape[1], hubs["features"].shape[1]);

    // embed: the folder's images in path order; rows equal predict's pre_logits of that order.
    let emb = root.join("emb.safetensors");
    run_ok(
        hub()
            .args(["embed", "--pretrained", "hf-hub:timm/test_coatnet.untrained", "--batch-size", "2", "--out"])
            .arg(&emb)
            .arg(root.join("images")),
    );
    let e = read_tensors(&emb).unwrap();
    assert_eq!(e["embeddings"].shape, hubs["pre_logits"].shape);
    let err = rel_l2(&e["embeddings"].f32, &hubs["pre_logits"].f32, 0.0);
    assert!(err < 1e-6, "embeddings vs predict's pre_logits: {err:.2e}");
    let bytes = std::fs::read(&emb).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let files = &meta.metadata().as_ref().unwrap()["files"];
    assert_eq!(files, r#"["a/one.png","b/two.png","c.png"]"#);

    // A repo that is not cached: the error names the cache and the download command.
    let out = hub()
        .args(["predict", "--pretrained", "hf-hub:timm/maxvit_nano_rw_256.sw_in1k"])
        .arg(&images[0])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(&cache.display().to_string())
            && err.contains("huggingface-cli download timm/maxvit_nano_rw_256.sw_in1k"),
        "{err}"
    );
}
