//! Every golden case (timm-generated) must match: eval outputs, train logits/loss, every gradient
//! and the updated BatchNorm buffers, within the fixture README's tolerances.
//! Cases come from `$MAXXVIT_GOLDEN_DIR` (default `../shared/golden`); new cases need no code.

use std::collections::HashMap;

use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use model::golden::{case_dirs, golden_dir, rel_l2, GoldenCase, IoTensor, GRAD_FLOOR_FRACTION, GRAD_TOL, OUTPUT_TOL};
use model::state_dict::{EntryKind, Values};
use model::{load_safetensors, LoadMode, MaxxVit};

type Ad = Autodiff<Flex>;

fn tensor4<B: Backend>(t: &IoTensor, device: &B::Device) -> Tensor<B, 4> {
    Tensor::from_data(TensorData::new(t.f32.clone(), t.shape.clone()), device)
}

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

struct Checker<'a> {
    case: String,
    io: &'a HashMap<String, IoTensor>,
    failures: Vec<String>,
    checked: usize,
}

impl Checker<'_> {
    fn compare(&mut self, name: &str, ours: &[f32], shape: &[usize], floor: f64, tol: f64) {
        let Some(reference) = self.io.get(name) else {
            self.failures.push(format!("{}: fixture has no tensor {name}", self.case));
            return;
        };
        let ref_shape: Vec<usize> = reference.shape.clone();
        if ref_shape.iter().product::<usize>() != shape.iter().product::<usize>()
            || (ref_shape != shape && !ref_shape.is_empty())
        {
            self.failures.push(format!("{}: {name}: shape {shape:?}, fixture {ref_shape:?}", self.case));
            return;
        }
        let err = rel_l2(ours, &reference.f32, floor);
        self.checked += 1;
        if !(err < tol) {
            self.failures.push(format!("{}: {name}: relative error {err:.3e} >= {tol:.0e}", self.case));
        }
    }
}

fn check_case(case: &GoldenCase, failures: &mut Vec<String>) -> usize {
    let device = Default::default();
    let io = case.io().unwrap_or_else(|e| panic!("{}: {e}", case.name));
    let mut c = Checker { case: case.name.clone(), io: &io, failures: vec![], checked: 0 };
    let model = MaxxVit::<Ad>::new(&case.cfg, &case.args, &device).unwrap_or_else(|e| panic!("{}: {e}", case.name));
    let (model, _) =
        load_safetensors(model, &case.weights(), LoadMode::Strict).unwrap_or_else(|e| panic!("{}: {e}", case.name));

    // Eval: the inner (non-autodiff) model uses running stats and no dropout.
    let eval = model.valid();
    let input = io.get("input").expect("fixture input");
    let x = tensor4::<Flex>(input, &device);
    let inter = eval.forward_intermediates(x.clone());
    c.compare("eval.stem", &values(inter.stem.clone()), &inter.stem.dims(), 0.0, OUTPUT_TOL);
    for (i, stage) in inter.stages.iter().enumerate() {
        c.compare(&format!("eval.stage.{i}"), &values(stage.clone()), &stage.dims(), 0.0, OUTPUT_TOL);
    }
    let features = eval.forward_features(x.clone());
    c.compare("eval.features", &values(features.clone()), &features.dims(), 0.0, OUTPUT_TOL);
    let pre_logits = eval.forward_head(features.clone(), true);
    c.compare("eval.pre_logits", &values(pre_logits.clone()), &pre_logits.dims(), 0.0, OUTPUT_TOL);
    let logits = eval.forward(x);
    c.compare("eval.logits", &values(logits.clone()), &logits.dims(), 0.0, OUTPUT_TOL);

    // Train: batch statistics, one forward + backward, no optimizer step.
    let x = tensor4::<Ad>(input, &device);
    let target = io.get("target").expect("fixture target").i64.clone();
    let n = target.len();
    let logits = model.forward(x);
    c.compare("train.logits", &values(logits.clone()), &logits.dims(), 0.0, OUTPUT_TOL);
    let target = Tensor::<Ad, 1, Int>::from_data(TensorData::new(target, [n]), &device);
    let loss = log_softmax(logits, 1).gather(1, target.reshape([n, 1])).mean().neg();
    c.compare("train.loss", &values(loss.clone()), &[], 0.0, OUTPUT_TOL);
    let grads = loss.backward();
    let floor = GRAD_FLOOR_FRACTION * case.grad_global_norm;
    for (key, shape, grad) in model.gradients_by_key(&grads) {
        let grad = grad.unwrap_or_else(|| vec![0.0; shape.iter().product()]);
        c.compare(&format!("grad.{key}"), &grad, &shape, floor, GRAD_TOL);
    }
    for (info, value) in model.state_dict() {
        if let (EntryKind::Buffer, Values::F32(v)) = (info.kind, value) {
            c.compare(&format!("train.buffer.{}", info.key), &v, &info.shape, 0.0, OUTPUT_TOL);
        }
    }
    // Every fixture tensor must have been compared (no silently ignored gradients).
    let expected = io.keys().filter(|k| !matches!(k.as_str(), "input" | "target")).count();
    if c.checked + c.failures.len() < expected {
        c.failures.push(format!("{}: compared {} of {expected} fixture tensors", case.name, c.checked));
    }
    let checked = c.checked;
    failures.extend(c.failures);
    checked
}

#[test]
fn every_golden_case_matches_timm() {
    let root = golden_dir();
    let dirs = case_dirs(&root).unwrap_or_else(|e| panic!("golden dir: {e}"));
    assert!(!dirs.is_empty(), "no golden cases under {}", root.display());
    let mut failures = vec![];
    for dir in &dirs {
        let case = GoldenCase::load(dir).unwrap_or_else(|e| panic!("{e}"));
        let started = std::time::Instant::now();
        let checked = check_case(&case, &mut failures);
        eprintln!("{}: {checked} tensors compared in {:.1}s", case.name, started.elapsed().as_secs_f64());
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}
