//! One golden case against any backend: eval outputs, train logits and loss, every gradient and
//! the updated BatchNorm buffers, within the fixture README's tolerances. The CPU test and
//! `trainer golden-check --device cuda` (the GPU machine's parity check) both run this.

use std::collections::HashMap;

use burn::module::AutodiffModule;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};

use crate::golden::{rel_l2, GoldenCase, IoTensor, GRAD_FLOOR_FRACTION, GRAD_TOL, OUTPUT_TOL};
use crate::state_dict::{EntryKind, Values};
use crate::{load_safetensors, LoadMode, MaxxVit, ModelError};

/// What one case compared, and every tensor outside its tolerance (with the error).
#[derive(Debug, Default)]
pub struct CaseReport {
    pub checked: usize,
    pub failures: Vec<String>,
    /// The largest relative error seen over outputs and over gradients.
    pub worst_output: f64,
    pub worst_grad: f64,
}

fn tensor4<B: Backend>(t: &IoTensor, device: &B::Device) -> Tensor<B, 4> {
    Tensor::from_data(TensorData::new(t.f32.clone(), t.shape.clone()), device)
}

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().expect("float tensor")
}

struct Checker<'a> {
    case: &'a str,
    io: &'a HashMap<String, IoTensor>,
    report: CaseReport,
}

impl Checker<'_> {
    fn compare(&mut self, name: &str, ours: &[f32], shape: &[usize], floor: f64, tol: f64) {
        let Some(reference) = self.io.get(name) else {
            self.report.failures.push(format!("{}: fixture has no tensor {name}", self.case));
            return;
        };
        let ref_shape = &reference.shape;
        if ref_shape.iter().product::<usize>() != shape.iter().product::<usize>()
            || (ref_shape != shape && !ref_shape.is_empty())
        {
            self.report.failures.push(format!("{}: {name}: shape {shape:?}, fixture {ref_shape:?}", self.case));
            return;
        }
        let err = rel_l2(ours, &reference.f32, floor);
        self.report.checked += 1;
        let worst = if tol == GRAD_TOL { &mut self.report.worst_grad } else { &mut self.report.worst_output };
        *worst = worst.max(err);
        if !(err < tol) {
            self.report.failures.push(format!("{}: {name}: relative error {err:.3e} >= {tol:.0e}", self.case));
        }
    }
}

/// Run `case` on `device`; errors only for unreadable fixtures or weights.
pub fn check_case<B: AutodiffBackend>(case: &GoldenCase, device: &B::Device) -> Result<CaseReport, ModelError> {
    crate::layers::register_autodiff_ops::<B::InnerBackend>();
    let io = case.io()?;
    let mut c = Checker { case: &case.name, io: &io, report: CaseReport::default() };
    let model = MaxxVit::<B>::new(&case.cfg, &case.args, device)?;
    let (model, _) = load_safetensors(model, &case.weights(), LoadMode::Strict)?;
    let missing = |what: &str| ModelError::Format { path: case.io_path(), reason: format!("no tensor '{what}'") };
    let input = io.get("input").ok_or_else(|| missing("input"))?;
    let target = io.get("target").ok_or_else(|| missing("target"))?;

    // Eval: the inner (non-autodiff) model uses running stats and no dropout.
    let eval = model.valid();
    let x = tensor4::<B::InnerBackend>(input, device);
    let inter = eval.forward_intermediates(x.clone());
    c.compare("eval.stem", &values(inter.stem.clone()), &inter.stem.dims(), 0.0, OUTPUT_TOL);
    for (i, stage) in inter.stages.iter().enumerate() {
        c.compare(&format!("eval.stage.{i}"), &values(stage.clone()), &stage.dims(), 0.0, OUTPUT_TOL);
    }
    let features = eval.forward_features(x.clone());
    c.compare("eval.features", &values(features.clone()), &features.dims(), 0.0, OUTPUT_TOL);
    let pre_logits = eval.forward_head(features, true);
    c.compare("eval.pre_logits", &values(pre_logits.clone()), &pre_logits.dims(), 0.0, OUTPUT_TOL);
    let logits = eval.forward(x);
    c.compare("eval.logits", &values(logits.clone()), &logits.dims(), 0.0, OUTPUT_TOL);

    // Train: batch statistics, one forward + backward, no optimizer step.
    let x = tensor4::<B>(input, device);
    let n = target.i64.len();
    let logits = model.forward(x);
    c.compare("train.logits", &values(logits.clone()), &logits.dims(), 0.0, OUTPUT_TOL);
    let target = Tensor::<B, 1, Int>::from_data(TensorData::new(target.i64.clone(), [n]), device);
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
    if c.report.checked + c.report.failures.len() < expected {
        let msg = format!("{}: compared {} of {expected} fixture tensors", case.name, c.report.checked);
        c.report.failures.push(msg);
    }
    Ok(c.report)
}

/// How far one train step under autocast lands from timm's float32 step (the fixture's
/// `train.logits` and `grad.*`): relative L2 over the logits and over all gradients together.
#[derive(Debug, Clone, Copy)]
pub struct AutocastDeviation {
    pub logits: f64,
    pub grads: f64,
}

/// Bounds for [`AutocastDeviation`] under bf16: the spread of timm's own bf16 autocast on the
/// golden cases (`bench/timm_autocast_error.py`, torch 2.15 CPU: logits 3e-3..3.3e-2, gradients
/// 6e-3..2.0e-1 from its f32 step), rounded up.
pub const BF16_LOGITS_TOL: f64 = 5e-2;
pub const BF16_GRADS_TOL: f64 = 2.5e-1;

impl AutocastDeviation {
    /// Inside the bf16 bounds, and not zero (the casts must have happened).
    pub fn within_bf16_spread(&self) -> bool {
        self.logits > 0.0 && self.logits < BF16_LOGITS_TOL && self.grads > 0.0 && self.grads < BF16_GRADS_TOL
    }
}

/// One train step of `case` (forward, cross-entropy, backward) with matmuls and convolutions
/// in `dtype` (crate::autocast), compared with timm's float32 step.
pub fn autocast_deviation<B: AutodiffBackend>(
    case: &GoldenCase,
    device: &B::Device,
    dtype: burn::tensor::FloatDType,
) -> Result<AutocastDeviation, ModelError> {
    crate::layers::register_autodiff_ops::<B::InnerBackend>();
    let io = case.io()?;
    let get = |what: &str| {
        io.get(what).ok_or_else(|| ModelError::Format { path: case.io_path(), reason: format!("no tensor '{what}'") })
    };
    let model = MaxxVit::<B>::new(&case.cfg, &case.args, device)?;
    let (model, _) = load_safetensors(model, &case.weights(), LoadMode::Strict)?;
    let (input, target) = (get("input")?, get("target")?);
    let n = target.i64.len();
    let _autocast = crate::autocast::autocast(Some(dtype));
    let logits = model.forward(tensor4::<B>(input, device));
    if logits.dtype() != burn::tensor::DType::F32 {
        return Err(ModelError::Config(format!("{}: autocast returned {:?} logits", case.name, logits.dtype())));
    }
    let target = Tensor::<B, 1, Int>::from_data(TensorData::new(target.i64.clone(), [n]), device);
    let loss = log_softmax(logits.clone(), 1).gather(1, target.reshape([n, 1])).mean().neg();
    let grads = loss.backward();
    let logits_err = rel_l2(&values(logits), &get("train.logits")?.f32, 0.0);
    let (mut ours, mut reference) = (vec![], vec![]);
    for (key, shape, grad) in model.gradients_by_key(&grads) {
        ours.extend(grad.unwrap_or_else(|| vec![0.0; shape.iter().product()]));
        reference.extend_from_slice(&get(&format!("grad.{key}"))?.f32);
    }
    Ok(AutocastDeviation { logits: logits_err, grads: rel_l2(&ours, &reference, 0.0) })
}
