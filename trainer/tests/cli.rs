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
fn golden_check_on_wgpu_fails_naming_a_sabotaged_tensor() {
    // The smallest case, copied with one stage output and one gradient off by more than their
    // tolerances (1e-4, 1e-3).
    let source = golden_dir().join("coatnet_rmlp_nano_rw");
    let dir = scratch("sabotaged").join("coatnet_rmlp_nano_rw");
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["model.json", "weights.safetensors", "io.safetensors"] {
        std::fs::copy(source.join(file), dir.join(file)).unwrap();
    }
    scale_tensor(&dir.join("io.safetensors"), "eval.stage.1", 1.001);
    scale_tensor(&dir.join("io.safetensors"), "grad.stem.conv1.weight", 1.05);
    let out =
        trainer().args(["golden-check", "--device", "wgpu", "--dir"]).arg(dir.parent().unwrap()).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "a sabotaged fixture passed:\n{stdout}");
    assert!(stdout.contains("FAILED"), "{stdout}");
    for tensor in ["eval.stage.1", "grad.stem.conv1.weight"] {
        let line =
            stderr.lines().find(|l| l.contains(tensor)).unwrap_or_else(|| panic!("{tensor} not named:\n{stderr}"));
        assert!(line.contains("relative error"), "{line}");
    }
    // Only the two sabotaged tensors fail: the rest of the case is exact on wgpu.
    assert!(stderr.contains("2 of "), "{stderr}");
}
