//! The collectives: in-process and TCP (one socket per rank, as separate processes use them).

use std::net::TcpListener;
use std::time::{Duration, Instant};

use trainer::dist::local::InProcess;
use trainer::dist::tcp::Tcp;
use trainer::dist::watchdog::Watchdog;
use trainer::dist::{all_reduce_mean, Collective, Rendezvous};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn rv(rank: usize, world: usize, port: u16) -> Rendezvous {
    Rendezvous { rank, world, local_rank: rank, local_world: world, master_addr: "127.0.0.1".into(), master_port: port }
}

/// Each rank contributes `[rank + 1, 10·(rank + 1), …]`; every rank must see the same results.
fn exercise(mut c: Box<dyn Collective>) -> (Vec<f32>, Vec<f32>, Vec<f64>) {
    let r = c.rank() as f32 + 1.0;
    let mut sum = vec![r, 10.0 * r, 0.5];
    c.all_reduce_sum(&mut sum, "sum").unwrap();
    let mut mean = vec![r; 4];
    all_reduce_mean(c.as_mut(), &mut mean, "mean").unwrap();
    let mut b = vec![r; 3];
    c.broadcast(&mut b, "bcast").unwrap();
    let mut f = vec![r as f64];
    c.all_reduce_sum_f64(&mut f, "f64").unwrap();
    c.barrier("end").unwrap();
    assert_eq!(b, vec![1.0; 3], "broadcast sends rank 0's values");
    (sum, mean, f)
}

fn check(results: Vec<(Vec<f32>, Vec<f32>, Vec<f64>)>, world: usize) {
    let n = world as f32;
    let total = n * (n + 1.0) / 2.0;
    for (sum, mean, f) in results {
        assert_eq!(sum, vec![total, 10.0 * total, 0.5 * n]);
        assert_eq!(mean, vec![total / n; 4]);
        assert_eq!(f, vec![total as f64]);
    }
}

#[test]
fn in_process_collectives_reduce_and_broadcast() {
    for world in [1, 2, 4] {
        let handles: Vec<_> =
            InProcess::group(world).into_iter().map(|c| std::thread::spawn(move || exercise(Box::new(c)))).collect();
        check(handles.into_iter().map(|h| h.join().unwrap()).collect(), world);
    }
}

#[test]
fn tcp_collectives_reduce_and_broadcast() {
    for world in [2, 3] {
        let port = free_port();
        let handles: Vec<_> = (0..world)
            .map(|rank| {
                std::thread::spawn(move || {
                    exercise(Box::new(Tcp::connect(&rv(rank, world, port), "h", Duration::from_secs(20)).unwrap()))
                })
            })
            .collect();
        check(handles.into_iter().map(|h| h.join().unwrap()).collect(), world);
    }
}

#[test]
fn a_mismatched_config_or_a_missing_rank_fails_everyone_clearly() {
    let port = free_port();
    let root = std::thread::spawn(move || {
        Tcp::connect(&rv(0, 2, port), "aaa", Duration::from_secs(10)).err().map(|e| e.to_string())
    });
    let other = Tcp::connect(&rv(1, 2, port), "bbb", Duration::from_secs(10)).err().map(|e| e.to_string());
    let root = root.join().unwrap();
    assert!(root.unwrap().contains("another config"));
    assert!(other.unwrap().contains("another config"));

    let port = free_port();
    let started = Instant::now();
    let err = Tcp::connect(&rv(0, 3, port), "h", Duration::from_secs(1)).err().unwrap().to_string();
    assert!(err.contains("did not join") && err.contains("1, 2"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_stuck_or_dead_rank_is_named_within_the_timeout() {
    let port = free_port();
    let root = std::thread::spawn(move || {
        let mut c = Tcp::connect(&rv(0, 2, port), "h", Duration::from_secs(2)).unwrap();
        let started = Instant::now();
        let err = c.all_reduce_sum(&mut [1.0], "grads").unwrap_err().to_string();
        (err, started.elapsed())
    });
    let c = Tcp::connect(&rv(1, 2, port), "h", Duration::from_secs(2)).unwrap();
    let (err, took) = root.join().unwrap(); // rank 1 never joins the all-reduce: timeout
    assert!(err.contains("'grads'") && err.contains("rank 1") && err.contains("timed out"), "{err}");
    assert!(took < Duration::from_secs(6));
    drop(c);

    let port = free_port();
    let root = std::thread::spawn(move || {
        let mut c = Tcp::connect(&rv(0, 2, port), "h", Duration::from_secs(30)).unwrap();
        let started = Instant::now();
        (c.all_reduce_sum(&mut [1.0], "grads").unwrap_err().to_string(), started.elapsed())
    });
    let c = Tcp::connect(&rv(1, 2, port), "h", Duration::from_secs(30)).unwrap();
    drop(c); // rank 1 dies: rank 0 hears it at once, not after the timeout
    let (err, took) = root.join().unwrap();
    assert!(err.contains("rank 1 left"), "{err}");
    assert!(took < Duration::from_secs(5));
}

#[test]
fn the_watchdog_names_a_collective_that_never_finishes() {
    let (tx, rx) = std::sync::mpsc::channel();
    let watch = |c: InProcess, tx: std::sync::mpsc::Sender<String>| {
        Watchdog::new(Box::new(c), Duration::from_millis(300), move |m| tx.send(m).unwrap())
    };
    // Operations that finish in time raise nothing.
    let handles: Vec<_> = InProcess::group(2)
        .into_iter()
        .map(|c| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut w = watch(c, tx);
                for _ in 0..3 {
                    w.all_reduce_sum(&mut [1.0], "quick").unwrap();
                    std::thread::sleep(Duration::from_millis(150));
                }
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    assert!(rx.recv_timeout(Duration::from_millis(500)).is_err());

    // Rank 1 never joins: rank 0's watchdog fires, naming the rank and the operation.
    let mut group = InProcess::group(2);
    let _absent = group.pop();
    let rank0 = group.pop().unwrap();
    let started = Instant::now();
    std::thread::spawn(move || watch(rank0, tx).all_reduce_sum(&mut [1.0], "gradients").ok());
    let message = rx.recv_timeout(Duration::from_secs(10)).expect("the watchdog fired");
    assert!(message.contains("rank 0") && message.contains("'gradients'"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn rendezvous_reads_torchrun_slurm_and_mpi_variables() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    };
    let t = Rendezvous::from_env(env(&[
        ("RANK", "3"),
        ("WORLD_SIZE", "8"),
        ("LOCAL_RANK", "3"),
        ("MASTER_ADDR", "node0"),
        ("MASTER_PORT", "1234"),
    ]))
    .unwrap();
    assert_eq!((t.rank, t.world, t.local_rank, t.master_addr.as_str(), t.master_port), (3, 8, 3, "node0", 1234));
    let s = Rendezvous::from_env(env(&[
        ("SLURM_PROCID", "9"),
        ("SLURM_NTASKS", "16"),
        ("SLURM_LOCALID", "1"),
        ("MASTER_ADDR", "n0"),
    ]))
    .unwrap();
    assert_eq!((s.rank, s.world, s.local_rank, s.master_port), (9, 16, 1, 29500));
    let m = Rendezvous::from_env(env(&[("OMPI_COMM_WORLD_RANK", "1"), ("OMPI_COMM_WORLD_SIZE", "2")])).unwrap();
    assert_eq!((m.rank, m.world), (1, 2));
    assert_eq!(Rendezvous::from_env(env(&[])).unwrap().world, 1);
    assert!(Rendezvous::from_env(env(&[("RANK", "4"), ("WORLD_SIZE", "4")])).is_err());
    assert!(Rendezvous::from_env(env(&[("RANK", "x"), ("WORLD_SIZE", "4")])).is_err());
}
