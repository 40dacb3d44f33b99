//! Which part of a model launches which kernels? The kernel census of `trainer benchmark
//! --census` per part (issue 11): the stem, every conv block and attention block of every stage,
//! and the final norm + head + loss, each run forward and backward on its own (fused wgpu, Burn's
//! CubeCL kernels; on lavapipe here, CUDA's kernels by name), after two warm-up passes over all
//! of them (the second can still tune: a fused kernel the first pass shaped differently).
//! Prints launches per part, forward and backward, and by kernel kind; `--detail PART` also
//! prints that part's launches in order, with the ops a fused kernel holds.
//!
//! A part's backward is that of `sum(y · probe)` with respect to its input and its parameters;
//! the probe's multiply and sum are one or two launches of each count, the same for every part.
//!
//! `cargo run -p model --example op_census -- MODEL IMG BATCH [--detail PART]`

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use burn::backend::{Autodiff, Wgpu};
use burn::cubecl::config::profiling::ProfilingLogLevel;
use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor};
use model::blocks::Block;
use model::MaxxVit;

type B = Autodiff<Wgpu>;

/// The kernel log's length once CubeCL's background writer has stopped adding to it.
fn settled_len(path: &PathBuf) -> u64 {
    let len = || std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let (mut last, mut since) = (len(), Instant::now());
    while since.elapsed() < Duration::from_millis(300) {
        std::thread::sleep(Duration::from_millis(20));
        if len() != last {
            (last, since) = (len(), Instant::now());
        }
    }
    last
}

/// One launch: its kind (`KernelBinop.MulOp` for a binary op) and the ops it fuses.
fn launches(text: &str) -> Vec<(String, String)> {
    const OPS: &[&str] = &[
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Powf",
        "Exp",
        "Log",
        "Sqrt",
        "Abs",
        "Tanh",
        "Erf",
        "Recip",
        "Equal",
        "Lower",
        "Greater",
        "ConditionalAssign",
        "Gather",
        "Select",
        "Clamp",
        "Max",
        "Min",
        "Neg",
        "Cast",
    ];
    let mut out: Vec<(String, String)> = vec![];
    for line in text.lines() {
        let fields: Vec<&str> = line.splitn(3, '|').map(str::trim).collect();
        if fields.len() == 3 && fields[0].is_empty() && fields[1].chars().next().is_some_and(|c| c.is_ascii_digit()) {
            let path = fields[2].split(['<', ' ']).next().unwrap_or("").trim_end_matches(':');
            let mut kind = path.rsplit("::").next().unwrap_or(path).to_string();
            if kind.ends_with("Binop") {
                if let Some(op) = fields[2].split("::").find(|s| s.ends_with("Op,") || s.ends_with("Op>")) {
                    kind = format!("{kind}.{}", op.trim_end_matches([',', '>']));
                }
            }
            out.push((kind, String::new()));
        } else if let (Some(last), Some(op)) = (out.last_mut(), line.trim().strip_suffix(" (")) {
            if OPS.contains(&op) {
                last.1.push_str(op);
                last.1.push(' ');
            }
        }
    }
    out
}

struct Census {
    log: PathBuf,
    offset: u64,
    detail: Option<String>,
    totals: BTreeMap<String, [usize; 2]>,
}

impl Census {
    fn mark(&mut self) {
        B::sync(&Default::default()).unwrap();
        self.offset = settled_len(&self.log);
    }

    fn take(&mut self) -> Vec<(String, String)> {
        B::sync(&Default::default()).unwrap();
        let end = settled_len(&self.log);
        let bytes = std::fs::read(&self.log).unwrap();
        let text = String::from_utf8_lossy(&bytes[self.offset as usize..end as usize]).into_owned();
        self.offset = end;
        launches(&text)
    }

    /// Forward and backward of `f` at `x` (with grads); returns `f(x)` without grads.
    fn part(
        &mut self,
        name: &str,
        x: Tensor<B, 4>,
        f: impl Fn(Tensor<B, 4>) -> Tensor<B, 4>,
        report: bool,
    ) -> Tensor<B, 4> {
        let x = x.detach().require_grad();
        self.mark();
        let y = f(x.clone());
        let forward = self.take();
        let probe = Tensor::<B, 4>::random(y.dims(), Distribution::Normal(0.0, 1.0), &y.device());
        self.mark();
        let _grads = (y.clone() * probe).sum().backward();
        let backward = self.take();
        if report {
            self.report(name, &forward, &backward);
        }
        y.detach()
    }

    fn report(&mut self, name: &str, forward: &[(String, String)], backward: &[(String, String)]) {
        let mut kinds: BTreeMap<&str, [usize; 2]> = BTreeMap::new();
        for (phase, list) in [forward, backward].iter().enumerate() {
            for (kind, _) in list.iter() {
                kinds.entry(kind).or_default()[phase] += 1;
                self.totals.entry(kind.clone()).or_default()[phase] += 1;
            }
        }
        let by_kind: Vec<String> = kinds.iter().map(|(k, [f, b])| format!("{k} {f}/{b}")).collect();
        println!("{name:<22} fwd {:>4} bwd {:>4} | {}", forward.len(), backward.len(), by_kind.join(", "));
        if self.detail.as_deref() == Some(name) {
            for (phase, list) in [("fwd", forward), ("bwd", backward)] {
                for (kind, ops) in list.iter() {
                    println!("    {phase} {kind} {ops}");
                }
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (name, img, batch) = (&args[1], args[2].parse::<usize>().unwrap(), args[3].parse::<usize>().unwrap());
    let detail = args.iter().position(|a| a == "--detail").map(|i| args[i + 1].clone());
    let log = std::env::temp_dir().join(format!("op_census_{}.log", std::process::id()));
    let mut config = CubeClRuntimeConfig::default();
    config.profiling.logger.file = Some(log.clone());
    config.profiling.logger.level = ProfilingLogLevel::Full;
    CubeClRuntimeConfig::set(config);
    model::layers::register_autodiff_ops::<Wgpu>();

    let (entry, _) = model::registry::lookup(name).unwrap();
    let mut margs = entry.default_args();
    margs.img_size = [img, img];
    let device = Default::default();
    let m = MaxxVit::<B>::new(&entry.config(), &margs, &device).unwrap();
    let x = Tensor::<B, 4>::random([batch, margs.in_chans, img, img], Distribution::Normal(0.0, 1.0), &device);
    let classes = margs.num_classes.max(1);
    let target = Tensor::<B, 1, Int>::random([batch], Distribution::Uniform(0.0, classes as f64), &device);
    let mut census = Census { log, offset: 0, detail, totals: BTreeMap::new() };
    for report in [false, false, true] {
        let mut y = census.part("stem", x.clone(), |x| m.stem.forward(x), report);
        for (i, stage) in m.stages.iter().enumerate() {
            for (j, block) in stage.blocks.iter().enumerate() {
                let tag = format!("s{i}.b{j}");
                y = match block {
                    Block::Parallel(b) => {
                        for (k, conv) in b.conv.iter().enumerate() {
                            y = census.part(&format!("{tag}.conv{k}"), y, |x| conv.forward(x), report);
                        }
                        let attn = |x: Tensor<B, 4>| b.attn.forward(x.permute([0, 2, 3, 1])).permute([0, 3, 1, 2]);
                        census.part(&format!("{tag}.attn"), y, attn, report)
                    }
                    other => census.part(&tag, y, |x| other.forward(x), report),
                };
            }
        }
        let head = |x: Tensor<B, 4>| {
            let features = match &m.norm {
                Some(norm) => norm.forward(x),
                None => x,
            };
            let logits = m.forward_head(features, false);
            let loss = log_softmax(logits, 1).gather(1, target.clone().reshape([batch, 1])).mean().neg();
            loss.reshape([1, 1, 1, 1])
        };
        census.part("norm+head+loss", y, head, report);
    }
    let (f, b): (usize, usize) = census.totals.values().fold((0, 0), |(f, b), [x, y]| (f + x, b + y));
    println!(
        "total                  fwd {f:>4} bwd {b:>4} (each part's backward includes the probe's multiply and sum)"
    );
    let mut kinds: Vec<_> = census.totals.iter().collect();
    kinds.sort_by_key(|(_, [f, b])| std::cmp::Reverse(f + b));
    for (k, [f, b]) in kinds {
        println!("  {k:<40} {f:>5} {b:>5}");
    }
}
