//! A watchdog around any collective: an operation that does not finish within the timeout ends
//! the process with the rank and the operation named, instead of hanging (NCCL, unlike our TCP
//! sockets, has no deadline of its own: a dead peer leaves the others waiting forever).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::Collective;

type InFlight = Arc<Mutex<Option<(String, Instant)>>>;

pub struct Watchdog {
    inner: Box<dyn Collective>,
    in_flight: InFlight,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Calls `on_expiry(message)` once per operation that runs past `timeout`.
    pub fn new(inner: Box<dyn Collective>, timeout: Duration, on_expiry: impl Fn(String) + Send + 'static) -> Self {
        let in_flight: InFlight = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let rank = inner.rank();
        let thread = {
            let (in_flight, stop) = (in_flight.clone(), stop.clone());
            let tick = (timeout / 10).clamp(Duration::from_millis(10), Duration::from_secs(1));
            std::thread::Builder::new()
                .name("collective-watchdog".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        let mut slot = in_flight.lock().unwrap_or_else(|e| e.into_inner());
                        if let Some((what, since)) = slot.as_ref() {
                            if since.elapsed() > timeout {
                                let message = format!(
                                    "rank {rank}: collective '{what}' did not finish within {}s (a peer is stuck or gone); aborting",
                                    timeout.as_secs_f64()
                                );
                                *slot = None;
                                drop(slot);
                                on_expiry(message);
                            }
                        }
                    }
                })
                .expect("watchdog thread")
        };
        Self { inner, in_flight, stop, thread: Some(thread) }
    }

    /// The production behaviour: log and exit with status 124 (as `timeout` does). The
    /// checkpoints on disk are whole (written to a temporary directory and renamed).
    pub fn exit_on_expiry(inner: Box<dyn Collective>, timeout: Duration) -> Self {
        Self::new(inner, timeout, |message| {
            tracing::error!("{message}");
            eprintln!("error: {message}");
            // SAFETY: _exit ends the process without running destructors the stuck thread holds.
            unsafe { libc::_exit(124) }
        })
    }

    fn guard<R>(&mut self, what: &str, op: impl FnOnce(&mut dyn Collective) -> R) -> R {
        *self.in_flight.lock().unwrap_or_else(|e| e.into_inner()) = Some((what.to_string(), Instant::now()));
        let result = op(self.inner.as_mut());
        *self.in_flight.lock().unwrap_or_else(|e| e.into_inner()) = None;
        result
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Collective for Watchdog {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn world(&self) -> usize {
        self.inner.world()
    }
    fn all_reduce_sum(&mut self, buf: &mut [f32], what: &str) -> Result<()> {
        self.guard(what, |c| c.all_reduce_sum(buf, what))
    }
    fn all_reduce_sum_f64(&mut self, buf: &mut [f64], what: &str) -> Result<()> {
        self.guard(what, |c| c.all_reduce_sum_f64(buf, what))
    }
    fn broadcast(&mut self, buf: &mut [f32], what: &str) -> Result<()> {
        self.guard(what, |c| c.broadcast(buf, what))
    }
    fn barrier(&mut self, what: &str) -> Result<()> {
        self.guard(what, |c| c.barrier(what))
    }
    fn all_reduce_sum_device(&mut self, buf: &mut dyn super::DeviceBuffer, what: &str) -> Result<()> {
        self.guard(what, |c| c.all_reduce_sum_device(buf, what))
    }
    fn broadcast_device(&mut self, buf: &mut dyn super::DeviceBuffer, what: &str) -> Result<()> {
        self.guard(what, |c| c.broadcast_device(buf, what))
    }
}
