//! Weights in timm's safetensors layout, both ways, and every way a file can be wrong.

use std::collections::HashMap;
use std::path::PathBuf;

use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use burn::tensor::{Tensor, TensorData};
use model::golden::{case_dirs, golden_dir, read_tensors, GoldenCase};
use model::state_dict::{serialize_state_dict, EntryKind, KeyInfo, Values};
use model::{load_safetensors, save_safetensors, LoadMode, MaxxVit, ModelError, SaveDtype};
use safetensors::tensor::{Dtype, TensorView};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("maxxvit-st-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn first_case() -> GoldenCase {
    let dirs = case_dirs(&golden_dir()).unwrap();
    GoldenCase::load(dirs.iter().find(|d| d.ends_with("maxvit_tiny_tf")).unwrap_or(&dirs[0])).unwrap()
}

fn build(case: &GoldenCase) -> MaxxVit<Flex> {
    MaxxVit::new(&case.cfg, &case.args, &Default::default()).unwrap()
}

/// Rewrite a safetensors file through `edit` (name → (dtype, shape, bytes)).
fn rewrite(src: &PathBuf, dst: &PathBuf, edit: impl FnOnce(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>)) {
    let bytes = std::fs::read(src).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<_> =
        file.tensors().into_iter().map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec())).collect();
    edit(&mut tensors);
    let views: Vec<_> =
        tensors.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    std::fs::write(dst, safetensors::serialize(views, &None).unwrap()).unwrap();
}

#[test]
fn saving_loaded_golden_weights_reproduces_timms_file_byte_for_byte() {
    let dir = scratch("golden-bytes");
    for case_dir in case_dirs(&golden_dir()).unwrap() {
        let case = GoldenCase::load(&case_dir).unwrap();
        let (model, report) = load_safetensors(build(&case), &case.weights(), LoadMode::Strict).unwrap();
        assert!(report.skipped.is_empty() && report.unexpected.is_empty());
        let out = dir.join(format!("{}.safetensors", case.name));
        save_safetensors(&model, &out, SaveDtype::F32).unwrap();
        let ours = std::fs::read(&out).unwrap();
        let timms = std::fs::read(case.weights()).unwrap();
        assert!(ours == timms, "{}: saved file differs from timm's state_dict file", case.name);
    }
}

#[test]
fn save_load_save_is_byte_identical_and_keeps_bn_counters() {
    let case = first_case();
    let device = Default::default();
    // A training step moves running stats and num_batches_tracked away from their init.
    let model = MaxxVit::<Autodiff<Flex>>::new(&case.cfg, &case.args, &device).unwrap();
    let x = Tensor::<Autodiff<Flex>, 4>::random([2, 3, 64, 64], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
    let _ = model.forward(x);
    let trained = model.valid();
    let dir = scratch("roundtrip");
    let (a, b) = (dir.join("a.safetensors"), dir.join("b.safetensors"));
    save_safetensors(&trained, &a, SaveDtype::F32).unwrap();
    let (loaded, _) = load_safetensors(build(&case), &a, LoadMode::Strict).unwrap();
    save_safetensors(&loaded, &b, SaveDtype::F32).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());

    let saved = read_tensors(&a).unwrap();
    let counter = &saved["stem.norm1.num_batches_tracked"];
    assert!(counter.shape.is_empty(), "num_batches_tracked must be a scalar");
    assert_eq!(counter.i64, vec![1]);
}

#[test]
fn bf16_and_f16_files_load_as_rounded_f32() {
    let case = first_case();
    let (model, _) = load_safetensors(build(&case), &case.weights(), LoadMode::Strict).unwrap();
    let dir = scratch("half");
    for (dtype, round) in [
        (SaveDtype::BF16, (|x: f32| half::bf16::from_f32(x).to_f32()) as fn(f32) -> f32),
        (SaveDtype::F16, |x: f32| half::f16::from_f32(x).to_f32()),
    ] {
        let path = dir.join(format!("{dtype:?}.safetensors"));
        save_safetensors(&model, &path, dtype).unwrap();
        let (loaded, report) = load_safetensors(build(&case), &path, LoadMode::Strict).unwrap();
        assert!(report.source_dtypes.iter().any(|d| d.starts_with(&format!("{dtype:?}").to_uppercase())), "{report:?}");
        let original: HashMap<String, Values> = model.state_dict().into_iter().map(|(k, v)| (k.key, v)).collect();
        for (info, value) in loaded.state_dict() {
            match (value, &original[&info.key]) {
                (Values::F32(got), Values::F32(want)) => {
                    let want: Vec<f32> = want.iter().map(|x| round(*x)).collect();
                    assert_eq!(got, want, "{}", info.key);
                }
                (Values::I64(got), Values::I64(want)) => assert_eq!(&got, want),
                _ => panic!("{}: kind changed", info.key),
            }
        }
    }
}

fn load_err(case: &GoldenCase, path: &PathBuf, mode: LoadMode) -> String {
    match load_safetensors(build(case), path, mode) {
        Ok(_) => panic!("loading {} should fail", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_files_fail_with_the_file_and_key_named() {
    let case = first_case();
    let dir = scratch("bad");
    let weights = case.weights();

    let wrong_shape = dir.join("wrong_shape.safetensors");
    rewrite(&weights, &wrong_shape, |t| {
        let entry = t.iter_mut().find(|e| e.0 == "stem.conv1.weight").unwrap();
        entry.2 = vec![entry.2.iter().product::<usize>()];
    });
    let msg = load_err(&case, &wrong_shape, LoadMode::Strict);
    assert!(
        msg.contains("wrong_shape.safetensors") && msg.contains("stem.conv1.weight") && msg.contains("expected shape"),
        "{msg}"
    );

    let missing = dir.join("missing.safetensors");
    rewrite(&weights, &missing, |t| t.retain(|e| e.0 != "stages.0.blocks.0.conv.conv1_1x1.weight"));
    let msg = load_err(&case, &missing, LoadMode::Strict);
    assert!(
        msg.contains("missing.safetensors")
            && msg.contains("missing key")
            && msg.contains("stages.0.blocks.0.conv.conv1_1x1.weight"),
        "{msg}"
    );

    let extra = dir.join("extra.safetensors");
    rewrite(&weights, &extra, |t| t.push(("head.extra.weight".into(), Dtype::F32, vec![1], vec![0; 4])));
    let msg = load_err(&case, &extra, LoadMode::Strict);
    assert!(msg.contains("unexpected key") && msg.contains("head.extra.weight"), "{msg}");

    let wrong_dtype = dir.join("wrong_dtype.safetensors");
    rewrite(&weights, &wrong_dtype, |t| {
        let entry = t.iter_mut().find(|e| e.0 == "head.fc.bias").unwrap();
        entry.1 = Dtype::I32;
    });
    let msg = load_err(&case, &wrong_dtype, LoadMode::Strict);
    assert!(msg.contains("head.fc.bias") && msg.contains("I32"), "{msg}");

    let garbage = dir.join("garbage.safetensors");
    std::fs::write(&garbage, b"\x07\x00\x00\x00\x00\x00\x00\x00not json at all").unwrap();
    let msg = load_err(&case, &garbage, LoadMode::Strict);
    assert!(msg.contains("garbage.safetensors") && msg.contains("not a valid safetensors file"), "{msg}");

    let truncated = dir.join("truncated.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let msg = load_err(&case, &truncated, LoadMode::Strict);
    assert!(msg.contains("truncated.safetensors"), "{msg}");

    let absent = dir.join("absent.safetensors");
    let msg = load_err(&case, &absent, LoadMode::Strict);
    assert!(msg.contains("absent.safetensors"), "{msg}");
}

#[test]
fn fine_tune_load_skips_a_classifier_of_another_shape_and_says_so() {
    let case = first_case();
    let pretrained_classes = case.args.num_classes;
    let mut args = case.args.clone();
    args.num_classes = pretrained_classes + 7;
    let model = MaxxVit::<Flex>::new(&case.cfg, &args, &Default::default()).unwrap();

    let strict = load_safetensors(model.clone(), &case.weights(), LoadMode::Strict);
    match strict {
        Err(ModelError::Mismatch(m)) => {
            assert_eq!(m.mismatched.len(), 2, "{m}");
            assert!(m.mismatched.iter().all(|k| k.starts_with("head.fc.")), "{m}");
        }
        other => panic!("strict load of a different head must fail, got {other:?}"),
    }
    let fresh_fc: Vec<f32> = head_fc(&model);
    let (tuned, report) = load_safetensors(model, &case.weights(), LoadMode::FineTune).unwrap();
    assert_eq!(report.skipped.len(), 2, "{report:?}");
    assert!(report.skipped.iter().all(|s| s.starts_with("head.fc.")));
    assert_eq!(head_fc(&tuned), fresh_fc, "the new classifier keeps its init");
    // Everything else came from the file.
    let file = read_tensors(&case.weights()).unwrap();
    for (info, value) in tuned.state_dict() {
        if let (false, Values::F32(v)) = (info.key.starts_with("head.fc."), value) {
            assert_eq!(v, file[&info.key].f32, "{}", info.key);
        }
    }
}

fn head_fc(model: &MaxxVit<Flex>) -> Vec<f32> {
    model
        .state_dict()
        .into_iter()
        .find(|(k, _)| k.key == "head.fc.weight")
        .map(|(_, v)| match v {
            Values::F32(v) => v,
            Values::I64(_) => unreachable!(),
        })
        .unwrap()
}

#[test]
fn serialised_dtypes_are_timms() {
    let entries = vec![
        (KeyInfo { key: "a.weight".into(), shape: vec![2], kind: EntryKind::Parameter }, Values::F32(vec![1.0, 2.0])),
        (
            KeyInfo { key: "a.num_batches_tracked".into(), shape: vec![], kind: EntryKind::Counter },
            Values::I64(vec![3]),
        ),
    ];
    let bytes = serialize_state_dict(&entries, SaveDtype::F32, None).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(file.tensor("a.weight").unwrap().dtype(), Dtype::F32);
    let counter = file.tensor("a.num_batches_tracked").unwrap();
    assert_eq!((counter.dtype(), counter.shape()), (Dtype::I64, &[][..]));
    let _ = TensorData::new(vec![0f32], [1]);
}

/// The device-side state of data parallelism: `flat_tensors` lists every state-dict entry (or the
/// BatchNorm buffers only) as a 1-D tensor in state-dict order, and `set_flat_tensors` puts
/// changed values back in place, counters included, parameters still trainable.
#[test]
fn flat_tensors_round_trip_the_state_dict_and_write_back_changed_values() {
    let dirs = case_dirs(&golden_dir()).unwrap();
    let case = GoldenCase::load(dirs.iter().find(|d| d.ends_with("coatnet_bn_0_rw")).unwrap()).unwrap();
    let model: MaxxVit<Autodiff<Flex>> = MaxxVit::new(&case.cfg, &case.args, &Default::default()).unwrap();
    let state = model.state_dict();
    let flat = model.flat_tensors(false);
    assert_eq!(
        flat.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        state.iter().map(|(i, _)| i.key.clone()).collect::<Vec<_>>()
    );
    for ((info, values), (_, t)) in state.iter().zip(&flat) {
        let got = t.clone().into_data().to_vec::<f32>().unwrap();
        let want: Vec<f32> = match values {
            Values::F32(v) => v.clone(),
            Values::I64(v) => v.iter().map(|x| *x as f32).collect(),
        };
        assert_eq!(got, want, "{}", info.key);
    }
    let buffers = model.flat_tensors(true);
    assert!(!buffers.is_empty() && buffers.len() == model.buffer_state().len());
    assert!(buffers.iter().all(|(k, _)| !k.ends_with(".weight") && !k.ends_with(".bias")));

    // Every entry doubled (counters too) and written back.
    let doubled: HashMap<String, Tensor<Autodiff<Flex>, 1>> = flat.into_iter().map(|(k, t)| (k, t * 2.0)).collect();
    let model = model.set_flat_tensors(doubled);
    for ((info, before), (_, after)) in state.iter().zip(model.state_dict()) {
        match (before, after) {
            (Values::F32(b), Values::F32(a)) => {
                assert!(b.iter().zip(&a).all(|(x, y)| 2.0 * x == *y), "{}", info.key)
            }
            (Values::I64(b), Values::I64(a)) => {
                assert_eq!(a, b.iter().map(|x| 2 * x).collect::<Vec<_>>(), "{}", info.key)
            }
            _ => panic!("{}: dtype changed", info.key),
        }
    }
    // Parameters are still trainable: a backward pass reaches the stem's weight.
    let x = Tensor::<Autodiff<Flex>, 4>::ones(
        [1, case.args.in_chans, case.args.img_size[0], case.args.img_size[1]],
        &Default::default(),
    );
    let grads = model.forward(x).sum().backward();
    assert!(model.stem.conv1.weight.val().grad(&grads).is_some(), "stem.conv1.weight lost its gradient");
}
