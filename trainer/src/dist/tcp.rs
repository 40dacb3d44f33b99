//! One process per rank over TCP: rank 0 listens on `MASTER_ADDR:MASTER_PORT`, the others
//! connect (retrying until the deadline) and present their rank, world size and config hash.
//! Reductions go through rank 0 (star topology, summed in rank order): simple, deterministic,
//! and plenty for CPU runs and tests; GPUs use NCCL.
//!
//! Every wait has the configured timeout, and a peer that disappears closes its socket, so a
//! dead or stuck rank makes every other rank fail with the rank and the operation named.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{Collective, Rendezvous};

pub struct Tcp {
    rank: usize,
    world: usize,
    timeout: Duration,
    /// Rank 0: one stream per other rank (index r − 1). Others: the stream to rank 0.
    peers: Vec<TcpStream>,
}

fn send_frame(s: &mut TcpStream, op: &str, payload: &[u8]) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(12 + op.len());
    head.extend_from_slice(&(op.len() as u32).to_le_bytes());
    head.extend_from_slice(op.as_bytes());
    head.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    s.write_all(&head)?;
    s.write_all(payload)?;
    s.flush()
}

fn recv_frame(s: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut len4 = [0u8; 4];
    s.read_exact(&mut len4)?;
    let mut op = vec![0u8; u32::from_le_bytes(len4) as usize];
    s.read_exact(&mut op)?;
    let mut len8 = [0u8; 8];
    s.read_exact(&mut len8)?;
    let mut payload = vec![0u8; u64::from_le_bytes(len8) as usize];
    s.read_exact(&mut payload)?;
    Ok((String::from_utf8_lossy(&op).into_owned(), payload))
}

impl Tcp {
    /// Join the job. `config_hash` must agree on every rank.
    pub fn connect(rv: &Rendezvous, config_hash: &str, timeout: Duration) -> Result<Self> {
        let deadline = Instant::now() + timeout;
        let addr = format!("{}:{}", rv.master_addr, rv.master_port);
        let hello = format!("{} {} {}", rv.rank, rv.world, config_hash);
        let mut peers = Vec::new();
        if rv.rank == 0 {
            let listener = TcpListener::bind(("0.0.0.0", rv.master_port))
                .with_context(|| format!("rank 0: cannot listen on port {}", rv.master_port))?;
            listener.set_nonblocking(true)?;
            let mut by_rank: Vec<Option<TcpStream>> = (1..rv.world).map(|_| None).collect();
            while by_rank.iter().any(Option::is_none) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false)?;
                        s.set_read_timeout(Some(timeout))?;
                        s.set_nodelay(true)?;
                        let (_, body) = recv_frame(&mut s).context("rank 0: reading a rank's hello")?;
                        let body = String::from_utf8_lossy(&body).into_owned();
                        let parts: Vec<&str> = body.split(' ').collect();
                        let (r, w): (usize, usize) = (
                            parts[0].parse().unwrap_or(usize::MAX),
                            parts.get(1).and_then(|v| v.parse().ok()).unwrap_or(0),
                        );
                        let err = if w != rv.world {
                            Some(format!("rank {r} says the world has {w} ranks, rank 0 says {}", rv.world))
                        } else if parts.get(2) != Some(&config_hash) {
                            Some(format!(
                                "rank {r} runs another config (hash {}) than rank 0 ({config_hash})",
                                parts.get(2).unwrap_or(&"?")
                            ))
                        } else if r == 0 || r >= rv.world || by_rank[r - 1].is_some() {
                            Some(format!("rank {r} joined twice or is out of range"))
                        } else {
                            None
                        };
                        send_frame(&mut s, "ack", err.as_deref().unwrap_or("").as_bytes())?;
                        if let Some(e) = err {
                            bail!("rendezvous: {e}");
                        }
                        by_rank[r - 1] = Some(s);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        if Instant::now() > deadline {
                            let missing: Vec<String> = by_rank
                                .iter()
                                .enumerate()
                                .filter(|(_, s)| s.is_none())
                                .map(|(i, _)| (i + 1).to_string())
                                .collect();
                            bail!(
                                "rendezvous: rank(s) {} did not join {addr} within {}s",
                                missing.join(", "),
                                timeout.as_secs()
                            );
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => return Err(e).context("rank 0: accepting a rank"),
                }
            }
            peers = by_rank.into_iter().map(Option::unwrap).collect();
        } else {
            let mut stream = loop {
                let target = addr.to_socket_addrs().ok().and_then(|mut a| a.next());
                if let Some(Ok(s)) = target.map(|t| TcpStream::connect_timeout(&t, Duration::from_secs(2))) {
                    break s;
                }
                if Instant::now() > deadline {
                    bail!("rank {}: could not reach rank 0 at {addr} within {}s", rv.rank, timeout.as_secs());
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            stream.set_read_timeout(Some(timeout))?;
            stream.set_nodelay(true)?;
            send_frame(&mut stream, "hello", hello.as_bytes())?;
            let (_, err) =
                recv_frame(&mut stream).with_context(|| format!("rank {}: rank 0 did not answer", rv.rank))?;
            if !err.is_empty() {
                bail!("rendezvous: {}", String::from_utf8_lossy(&err));
            }
            peers.push(stream);
        }
        Ok(Self { rank: rv.rank, world: rv.world, timeout, peers })
    }

    fn io_error(&self, e: std::io::Error, peer: usize, what: &str) -> anyhow::Error {
        match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => anyhow::anyhow!(
                "rank {}: collective '{what}' timed out after {}s waiting for rank {peer}",
                self.rank,
                self.timeout.as_secs()
            ),
            _ => anyhow::anyhow!("rank {}: rank {peer} left during collective '{what}' ({e})", self.rank),
        }
    }

    /// Root gathers every rank's bytes in rank order, combines them, and sends the result back.
    fn star(&mut self, what: &str, mine: Vec<u8>, combine: impl Fn(&mut Vec<u8>, &[u8])) -> Result<Vec<u8>> {
        if self.rank == 0 {
            let mut acc = mine;
            for r in 1..self.world {
                let (op, payload) = recv_frame(&mut self.peers[r - 1]).map_err(|e| self.io_error(e, r, what))?;
                if op != what || payload.len() != acc.len() {
                    bail!(
                        "rank {r} is in collective '{op}' ({} bytes) while rank 0 is in '{what}' ({} bytes)",
                        payload.len(),
                        acc.len()
                    );
                }
                combine(&mut acc, &payload);
            }
            for r in 1..self.world {
                send_frame(&mut self.peers[r - 1], what, &acc).map_err(|e| self.io_error(e, r, what))?;
            }
            Ok(acc)
        } else {
            send_frame(&mut self.peers[0], what, &mine).map_err(|e| self.io_error(e, 0, what))?;
            let (op, payload) = recv_frame(&mut self.peers[0]).map_err(|e| self.io_error(e, 0, what))?;
            if op != what {
                bail!("rank 0 answered collective '{op}' while rank {} is in '{what}'", self.rank);
            }
            Ok(payload)
        }
    }
}

fn to_bytes<T: Copy, const N: usize>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    v.iter().flat_map(|x| f(*x)).collect()
}

impl Tcp {
    /// Every rank's `buf` through the hub: rank 0 folds the others into its own with `add`, in
    /// rank order (`None`: rank 0's buffer is the result), and every rank gets the result.
    fn exchange<T: Copy, const N: usize>(
        &mut self,
        buf: &mut [T],
        what: &str,
        to_le: fn(T) -> [u8; N],
        from_le: fn([u8; N]) -> T,
        add: Option<fn(T, T) -> T>,
    ) -> Result<()> {
        if self.world == 1 {
            return Ok(()); // alone: the result is this buffer
        }
        let out = self.star(what, to_bytes(buf, to_le), |acc, other| {
            if let Some(add) = add {
                for (a, b) in acc.chunks_exact_mut(N).zip(other.chunks_exact(N)) {
                    let sum = add(from_le(a.try_into().unwrap()), from_le(b.try_into().unwrap()));
                    a.copy_from_slice(&to_le(sum));
                }
            }
        })?;
        for (v, b) in buf.iter_mut().zip(out.chunks_exact(N)) {
            *v = from_le(b.try_into().unwrap());
        }
        Ok(())
    }
}

impl Collective for Tcp {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.world
    }
    fn all_reduce_sum(&mut self, buf: &mut [f32], what: &str) -> Result<()> {
        self.exchange(buf, what, f32::to_le_bytes, f32::from_le_bytes, Some(|a, b| a + b))
    }
    fn all_reduce_sum_f64(&mut self, buf: &mut [f64], what: &str) -> Result<()> {
        self.exchange(buf, what, f64::to_le_bytes, f64::from_le_bytes, Some(|a, b| a + b))
    }
    fn broadcast(&mut self, buf: &mut [f32], what: &str) -> Result<()> {
        // Everyone sends its buffer (for the size check); rank 0's comes back.
        self.exchange(buf, what, f32::to_le_bytes, f32::from_le_bytes, None)
    }
}
