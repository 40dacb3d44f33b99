//! Validation metrics, the run's `summary.csv` (timm's columns, one row per epoch) and
//! `metrics.csv` (one row per log interval: the per-step curves).

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use data::loader::Loader;
use data::mixup::Mix;
use model::MaxxVit;

use crate::checkpoint::Metrics;

/// Cross-entropy against soft targets `[B, C]`, mean over the batch.
pub fn soft_cross_entropy<B: Backend>(logits: Tensor<B, 2>, targets: Tensor<B, 2>) -> Tensor<B, 1> {
    (log_softmax(logits, 1) * targets).sum_dim(1).mean().neg()
}

/// Top-1 / top-5 hits and summed loss of one batch.
fn batch_stats<B: Backend>(logits: Tensor<B, 2>, labels: &[usize]) -> (usize, usize, f64) {
    let [b, c] = logits.dims();
    let device = logits.device();
    let target = Tensor::<B, 1, Int>::from_data(
        TensorData::new(labels.iter().map(|l| *l as i64).collect::<Vec<_>>(), [b]),
        &device,
    );
    let loss = log_softmax(logits.clone(), 1).gather(1, target.reshape([b, 1])).sum().neg().into_scalar();
    let scores = logits.into_data().convert::<f32>().to_vec::<f32>().expect("logits");
    let (mut top1, mut top5) = (0, 0);
    for (i, label) in labels.iter().enumerate() {
        let row = &scores[i * c..(i + 1) * c];
        let target_score = row[*label];
        // Rank = number of classes scoring strictly higher (ties count in the target's favour).
        let rank = row.iter().filter(|s| **s > target_score).count();
        top1 += (rank == 0) as usize;
        top5 += (rank < 5) as usize;
    }
    (top1, top5, burn::tensor::ElementConversion::elem::<f64>(loss))
}

/// top-1 / top-5 (in %) and mean loss of `model` (eval mode) over one pass of `loader`.
pub fn validate<B: Backend>(model: &MaxxVit<B>, loader: &Loader, device: &B::Device) -> Result<Metrics> {
    Ok(finish(validate_sums(model, loader, device)?))
}

/// Turn `[samples, top-1 hits, top-5 hits, summed loss]` (summed over ranks) into metrics.
pub fn finish([n, top1, top5, loss]: [f64; 4]) -> Metrics {
    let n = n.max(1.0);
    Metrics { top1: 100.0 * top1 / n, top5: 100.0 * top5 / n, loss: loss / n }
}

/// `[samples, top-1 hits, top-5 hits, summed loss]` over this rank's share of the data.
pub fn validate_sums<B: Backend>(model: &MaxxVit<B>, loader: &Loader, device: &B::Device) -> Result<[f64; 4]> {
    let (mut n, mut top1, mut top5, mut loss) = (0usize, 0usize, 0usize, 0.0f64);
    for batch in loader.epoch(0, 0) {
        let mut batch = batch?;
        if batch.labels.is_empty() {
            continue;
        }
        let labels = std::mem::take(&mut batch.labels);
        let x = crate::input::images::<B>(batch, loader.pipeline().normalization(), Mix::None, device);
        let (t1, t5, l) = batch_stats(model.forward(x), &labels);
        n += labels.len();
        top1 += t1;
        top5 += t5;
        loss += l;
    }
    Ok([n as f64, top1 as f64, top5 as f64, loss])
}

/// Append a row to `summary.csv` (header when the file is new), as timm's `update_summary`.
pub fn append_summary(path: &Path, epoch: u64, train_loss: f64, eval: Option<Metrics>, lr: f64) -> Result<()> {
    let new = !path.exists();
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    if new {
        writeln!(f, "epoch,train_loss,eval_loss,eval_top1,eval_top5,lr")?;
    }
    let (l, t1, t5) = eval.map_or((f64::NAN, f64::NAN, f64::NAN), |m| (m.loss, m.top1, m.top5));
    writeln!(f, "{epoch},{train_loss:.6},{l:.6},{t1:.4},{t5:.4},{lr:.8}")?;
    f.sync_all()?;
    Ok(())
}

/// The per-step metrics file beside `summary.csv`.
pub const STEP_FILE: &str = "metrics.csv";
const STEP_HEADER: &str = "step,epoch,train_loss,lr,img_per_s";

/// One `metrics.csv` row: the mean training loss since the previous row, at optimizer update
/// `step` (1-based), the learning rate of that update and the images/s of all ranks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepRow {
    pub step: u64,
    pub epoch: u64,
    pub loss: f64,
    pub lr: f64,
    pub img_per_s: f64,
}

pub fn append_step(path: &Path, row: &StepRow) -> Result<()> {
    let new = !path.exists();
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    if new {
        writeln!(f, "{STEP_HEADER}")?;
    }
    writeln!(f, "{},{},{:.6},{:.8},{:.1}", row.step, row.epoch, row.loss, row.lr, row.img_per_s)?;
    Ok(())
}

/// Every row of `metrics.csv` (none if the file is absent); a malformed row is an error naming
/// the file and line.
pub fn read_steps(path: &Path) -> Result<Vec<StepRow>> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(vec![]) };
    let mut rows = vec![];
    for (i, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let parse = |j: usize| -> Result<f64> {
            f.get(j)
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| anyhow::anyhow!("{} line {}: malformed row '{line}'", path.display(), i + 1))
        };
        rows.push(StepRow {
            step: parse(0)? as u64,
            epoch: parse(1)? as u64,
            loss: parse(2)?,
            lr: parse(3)?,
            img_per_s: parse(4)?,
        });
    }
    Ok(rows)
}

/// On resume from update `step`: drop the rows a killed run logged after it, so the curve
/// has each step once.
pub fn truncate_steps(path: &Path, step: u64) -> Result<()> {
    let rows = read_steps(path)?;
    if rows.iter().all(|r| r.step <= step) {
        return Ok(());
    }
    let mut text = format!("{STEP_HEADER}\n");
    for r in rows.iter().filter(|r| r.step <= step) {
        text += &format!("{},{},{:.6},{:.8},{:.1}\n", r.step, r.epoch, r.loss, r.lr, r.img_per_s);
    }
    model::state_dict::write_atomic(path, text.as_bytes())?;
    Ok(())
}
