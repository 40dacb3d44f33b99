//! Data-parallel training through the real multi-process path (one `trainer` process per rank,
//! TCP collectives, `launch/train.sh`): N ranks equal one rank with the same global batch, a
//! dead rank stops the job without harming its checkpoints, and a 2-rank run resumes on 1 rank.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use model::golden::read_tensors;
use trainer::config::RunConfig;

mod common;

fn repo() -> PathBuf {
    common::repo()
}

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_trainer")
}

fn scratch(name: &str) -> PathBuf {
    common::scratch("ddp", name)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Fashion-MNIST, 2,000 train + 2,000 val images, prepared once per test binary.
fn data_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| common::prepare_fashion_mnist(scratch("fmnist"), 2000))
}

/// configs/smoke.toml on the test data, with `sets` on top, written to `<out>/<name>.toml`.
fn config_file(out: &Path, name: &str, sets: &[&str]) -> (RunConfig, PathBuf) {
    let mut all = vec![
        format!("name=\"{name}\""),
        format!("data.root=\"{}\"", data_root().join("imagefolder").display()),
        format!("output_dir=\"{}\"", out.display()),
        format!("model.config_file=\"{}\"", repo().join("configs/models/smoke_coatnet.toml").display()),
        "logging.progress=false".into(),
        "data.workers=1".into(),
    ];
    all.extend(sets.iter().map(|s| s.to_string()));
    let cfg = RunConfig::load(&repo().join("configs/smoke.toml"), &all).unwrap();
    let file = out.join(format!("{name}.toml"));
    std::fs::write(&file, cfg.to_toml()).unwrap();
    (cfg, file)
}

/// One rank of a `world`-rank job, started as torchrun would.
fn spawn_rank(cfg_file: &Path, rank: usize, world: usize, port: u16, extra: &[&str]) -> Child {
    let mut cmd = Command::new(exe());
    cmd.args(["train", "--config"]).arg(cfg_file).args(extra).current_dir(repo());
    if world > 1 {
        cmd.env("RANK", rank.to_string())
            .env("WORLD_SIZE", world.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("LOCAL_WORLD_SIZE", world.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env("RAYON_NUM_THREADS", "1");
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

fn run_job(cfg_file: &Path, world: usize) {
    let port = free_port();
    let children: Vec<Child> = (0..world).map(|r| spawn_rank(cfg_file, r, world, port, &[])).collect();
    for (rank, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "rank {rank} of {world} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
}

fn step_dir(cfg: &RunConfig, step: u64) -> PathBuf {
    cfg.run_dir().join("checkpoints").join(format!("step-{step:09}"))
}

/// Trainable parameters of a checkpoint file (BatchNorm buffers left out).
fn params(file: &Path) -> HashMap<String, Vec<f32>> {
    read_tensors(file)
        .unwrap()
        .into_iter()
        .filter(|(k, _)| !k.contains("running_") && !k.ends_with("num_batches_tracked"))
        .map(|(k, t)| (k, t.f32))
        .collect()
}

fn max_diff(a: &HashMap<String, Vec<f32>>, b: &HashMap<String, Vec<f32>>) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().flat_map(|(k, x)| x.iter().zip(&b[k]).map(|(p, q)| (p - q).abs())).fold(0.0, f32::max)
}

/// Adam with eps = 1 is nearly linear in the gradient, so a summed (not averaged) gradient
/// moves the weights N times as far and the comparison fails; no clipping, no augmentation.
const EQUIVALENCE_SETS: [&str; 17] = [
    "training.global_batch_size=16",
    "training.max_steps=4",
    "training.ema=false",
    "checkpoint.every_steps=2",
    "checkpoint.keep_last=5",
    "optimizer.eps=1.0",
    "optimizer.lr=0.05",
    "optimizer.weight_decay=0.0",
    "optimizer.clip_grad=0.0",
    "schedule.warmup_epochs=0.0",
    "model.drop_path_rate=0.0",
    "augmentation.scale=[1.0, 1.0]",
    "augmentation.ratio=[1.0, 1.0]",
    "augmentation.hflip=0.0",
    "augmentation.label_smoothing=0.0",
    "data.val_split=\"no-validation\"",
    "training.seed=3",
];

#[test]
fn n_ranks_with_batch_b_equal_one_rank_with_batch_n_b() {
    let out = scratch("equiv");
    let model =
        format!("model.config_file=\"{}\"", repo().join("trainer/tests/fixtures/layernorm_convnext.toml").display());
    let sets: Vec<&str> = EQUIVALENCE_SETS.iter().copied().chain([model.as_str()]).collect();
    let (one, one_file) = config_file(&out, "one", &sets);
    run_job(&one_file, 1);
    let reference = params(&step_dir(&one, 4).join("model.safetensors"));
    let trained = max_diff(&reference, &params(&step_dir(&one, 2).join("model.safetensors")));
    assert!(trained > 1e-3, "steps 2 → 4 moved the weights by only {trained}");
    for world in [2, 4] {
        let (cfg, file) = config_file(&out, &format!("world{world}"), &sets);
        run_job(&file, world);
        let diff = max_diff(&reference, &params(&step_dir(&cfg, 4).join("model.safetensors")));
        assert!(diff < 1e-5, "{world} ranks × 16/{world} differ from 1 rank × 16 by {diff} (trained: {trained})");
    }
}

fn launch(cfg_file: &Path, nproc: usize, extra: &[&str]) -> Command {
    let mut cmd = Command::new(repo().join("launch/train.sh"));
    cmd.arg(cfg_file)
        .args(["--nproc", &nproc.to_string(), "--master-port", &free_port().to_string()])
        .args(extra)
        .env("TRAINER_BIN", exe())
        .current_dir(repo());
    cmd
}

fn succeed(mut cmd: Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The smoke config (BatchNorm, EMA) through launch/train.sh with 2 ranks × 20 equals 1 process
/// with 2 accumulated micro-batches of 20: the same samples, per-micro-batch BatchNorm
/// statistics and averaged gradients. Then the 2-rank run resumes on 1 rank.
#[test]
fn launcher_two_ranks_match_one_process_and_resume_on_one_rank() {
    let out = scratch("launch");
    let common =
        ["training.max_steps=6", "checkpoint.every_steps=2", "checkpoint.keep_last=5", "model.drop_path_rate=0.0"];
    let ddp_sets: Vec<&str> = common.iter().copied().chain(["training.global_batch_size=40"]).collect();
    let (ddp, ddp_file) = config_file(&out, "ddp", &ddp_sets);
    let launched = succeed(launch(&ddp_file, 2, &[]));
    assert!(String::from_utf8_lossy(&launched.stderr).contains("2 ranks"));
    for rank in 0..2 {
        let log = std::fs::read_to_string(ddp.run_dir().join(format!("logs/rank-{rank}.log"))).unwrap();
        assert!(log.contains("joined the job"), "rank {rank} log:\n{log}");
    }

    let accum_sets: Vec<&str> =
        common.iter().copied().chain(["training.batch_size=20", "training.grad_accum_steps=2"]).collect();
    let (accum, accum_file) = config_file(&out, "accum", &accum_sets);
    run_job(&accum_file, 1);
    for (file, what) in [("model.safetensors", "weights"), ("ema.safetensors", "EMA weights")] {
        let a = params(&step_dir(&ddp, 6).join(file));
        let diff = max_diff(&a, &params(&step_dir(&accum, 6).join(file)));
        assert!(diff < 1e-6, "2-rank {what} differ from 1-process accumulation by {diff}");
        let moved = max_diff(&a, &params(&step_dir(&ddp, 2).join(file)));
        assert!(moved > 1e-4, "{what} hardly trained ({moved})");
    }

    // Resume the 2-rank run's step-4 checkpoint on one rank (same global batch) to step 8.
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(step_dir(&ddp, 4).join("state.json")).unwrap()).unwrap();
    assert_eq!((state["world"].as_u64(), state["global_batch"].as_u64()), (Some(2), Some(40)));
    let resumed_sets: Vec<&str> = ddp_sets.iter().copied().chain(["training.max_steps=8"]).collect();
    let (resumed, resumed_file) = config_file(&out, "ddp", &resumed_sets);
    let step4 = step_dir(&ddp, 4);
    let mut cmd = Command::new(exe());
    cmd.args(["train", "--config"]).arg(&resumed_file).arg("--resume").arg(&step4).current_dir(repo());
    let output = succeed(cmd);
    assert!(String::from_utf8_lossy(&output.stdout).contains("done: 8 steps"));
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(step_dir(&resumed, 8).join("state.json")).unwrap()).unwrap();
    assert_eq!((state["world"].as_u64(), state["global_batch"].as_u64()), (Some(1), Some(40)));
}

fn wait_for(path: &Path, child: &mut Child, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !path.is_file() {
        assert!(Instant::now() < deadline, "{} never appeared", path.display());
        assert!(child.try_wait().unwrap().is_none(), "the job ended before {} appeared", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn alive(pid: i32) -> bool {
    // A zombie still has a /proc entry; it is dead for our purpose.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.split(") ").nth(1).unwrap_or("").starts_with('Z'))
        .unwrap_or(false)
}

/// SIGKILL one rank: the survivor fails by itself within the timeout naming the dead rank, the
/// launcher stops everyone and exits non-zero, and the last checkpoint resumes.
#[test]
fn a_killed_rank_stops_the_job_and_leaves_a_resumable_checkpoint() {
    let out = scratch("kill");
    let sets = ["training.max_steps=400", "checkpoint.every_steps=2", "distributed.timeout_s=30"];
    // training.batch_size per rank (no global_batch_size): 2 × 64.
    let (cfg, file) = config_file(&out, "direct", &sets);

    // Without the launcher: rank 0 must notice rank 1's death on its own.
    let port = free_port();
    let mut rank0 = spawn_rank(&file, 0, 2, port, &[]);
    let mut rank1 = spawn_rank(&file, 1, 2, port, &[]);
    wait_for(&step_dir(&cfg, 2).join("state.json"), &mut rank0, Duration::from_secs(300));
    let killed_at = Instant::now();
    rank1.kill().unwrap();
    rank1.wait().unwrap();
    let out0 = rank0.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out0.stderr);
    assert!(!out0.status.success(), "rank 0 survived its peer:\n{err}");
    assert!(killed_at.elapsed() < Duration::from_secs(30), "rank 0 took {:?}", killed_at.elapsed());
    assert!(err.contains("rank 1"), "the error does not name the dead rank:\n{err}");
    // Its checkpoint holds 2 × 64 per step; one rank would take 64, so resuming is refused.
    let mut cmd = Command::new(exe());
    cmd.args(["train", "--config"]).arg(&file).args(["--resume", "auto"]).current_dir(repo());
    let refused = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("global batch of 128 (2 ranks)"), "{err}");

    // Through the launcher, with a global batch: every process goes, the script exits non-zero.
    let sets: Vec<&str> = sets.iter().copied().chain(["training.global_batch_size=64"]).collect();
    let (cfg, file) = config_file(&out, "launched", &sets);
    let mut job = launch(&file, 2, &[]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_for(&step_dir(&cfg, 4).join("state.json"), &mut job, Duration::from_secs(300));
    let pid = |rank: usize| -> i32 {
        std::fs::read_to_string(cfg.run_dir().join(format!("logs/rank-{rank}.pid"))).unwrap().trim().parse().unwrap()
    };
    let (pid0, pid1) = (pid(0), pid(1));
    assert!(alive(pid0) && alive(pid1));
    let killed_at = Instant::now();
    unsafe { libc::kill(pid1, libc::SIGKILL) };
    let status = job.wait().unwrap();
    assert!(!status.success(), "the launcher exited 0 after a rank died");
    assert!(killed_at.elapsed() < Duration::from_secs(30), "the launcher took {:?}", killed_at.elapsed());
    assert!(!alive(pid0), "rank 0 (pid {pid0}) outlived the job");

    // Ranks that would resume from different checkpoints refuse together.
    let newest = trainer::checkpoint::list(&cfg.run_dir().join("checkpoints"));
    assert!(newest.len() >= 2, "{newest:?}");
    let port = free_port();
    let ranks = [
        spawn_rank(&file, 0, 2, port, &["--resume", newest[0].to_str().unwrap()]),
        spawn_rank(&file, 1, 2, port, &["--resume", newest[1].to_str().unwrap()]),
    ];
    for (rank, child) in ranks.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("would start elsewhere than rank 0"), "rank {rank}: {err}");
    }

    // The newest checkpoint is intact: resume on one rank (same global batch) and finish.
    let done_at = newest.first().expect("a checkpoint").clone();
    let last: u64 = done_at.file_name().unwrap().to_string_lossy()["step-".len()..].parse().unwrap();
    let finish = format!("training.max_steps={}", last + 2);
    let sets: Vec<&str> = sets.iter().copied().chain([finish.as_str()]).collect();
    let (_, file) = config_file(&out, "launched", &sets);
    let mut cmd = Command::new(exe());
    cmd.args(["train", "--config"]).arg(&file).args(["--resume", "auto"]).current_dir(repo());
    let output = succeed(cmd);
    assert!(String::from_utf8_lossy(&output.stdout).contains(&format!("done: {} steps", last + 2)));
}

/// `trainer collective-check` over TCP with 2 processes: sums, broadcast and timing reported.
#[test]
fn collective_check_runs_over_processes_and_refuses_cuda_without_it() {
    let port = free_port().to_string();
    let children: Vec<Child> = (0..2)
        .map(|rank| {
            Command::new(exe())
                .args(["collective-check", "--elems", "100000", "--elems", "3000", "--rounds", "3"])
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", "2")
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<Output> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    for o in &outputs {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let report = String::from_utf8_lossy(&outputs[0].stdout);
    // One JSON line per bucket size, timing the device-bucket path the gradients take.
    let lines: Vec<serde_json::Value> =
        report.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.iter().map(|j| j["elems"].as_u64().unwrap()).collect::<Vec<_>>(), [100000, 3000], "{report}");
    for json in &lines {
        assert_eq!(
            (json["backend"].as_str(), json["world"].as_u64(), json["correct"].as_bool(), json["buffer"].as_str()),
            (Some("tcp"), Some(2), Some(true), Some("device"))
        );
        assert!(json["median_ms"].as_f64().unwrap() > 0.0);
    }

    if !cfg!(feature = "cuda") {
        let o = Command::new(exe()).args(["collective-check", "--device", "cuda"]).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains("without CUDA"), "{err}");
    }
}
