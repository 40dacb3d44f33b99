//! A threaded, deterministic, resumable batch loader.
//!
//! `W` worker threads each build whole batches: for an indexable source worker `w` builds the
//! rank's batches `w, w+W, w+2W, …` of the epoch's global order; for shards it streams its own
//! shard list (see [`crate::sampler`]). The consumer takes batches round-robin, so the batch
//! sequence is the same whatever `W` is for an indexable source, and the same for a given `W`
//! with shards. Each worker keeps at most `prefetch` finished batches queued.
//!
//! A sample that cannot be read or decoded is left out of its batch (the batch is one shorter;
//! no other sample's label moves), counted, and reported through [`Loader::corrupt`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::decode::Decoder;
use crate::folder::ImageFolder;
use crate::rng::{key_id, Rng};
use crate::sampler::{IndexSampler, ShardPlan, ShuffleBuffer};
use crate::transform::train::Erasure;
use crate::transform::{normalize_chw, to_chw_u8, EvalTransform, TrainTransform, TrainTransformConfig};
use crate::wds::{LabelSource, ShardReader, WdsSample};
use crate::DataError;

/// Where samples come from.
#[derive(Debug, Clone)]
pub enum Source {
    Folder(Arc<ImageFolder>),
    Shards { shards: Vec<PathBuf>, num_samples: usize, labels: LabelSource },
}

impl Source {
    pub fn len(&self) -> usize {
        match self {
            Self::Folder(f) => f.len(),
            Self::Shards { num_samples, .. } => *num_samples,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What happens to each image.
#[derive(Debug, Clone)]
pub enum Pipeline {
    Train(TrainTransformConfig),
    Eval(EvalTransform),
}

impl Pipeline {
    pub fn img_size(&self) -> [usize; 2] {
        match self {
            Self::Train(t) => t.img_size,
            Self::Eval(e) => e.img_size,
        }
    }

    /// The normalisation `(scale, shift)` of [`crate::transform::normalize_coefficients`].
    pub fn normalization(&self) -> ([f32; 3], [f32; 3]) {
        let (mean, std) = match self {
            Self::Train(t) => (t.mean, t.std),
            Self::Eval(e) => (e.mean, e.std),
        };
        crate::transform::normalize_coefficients(mean, std)
    }
}

/// Batch pixel format: normalised `f32`, or raw `u8` to normalise on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    F32,
    U8,
}

#[derive(Debug, Clone)]
pub struct LoaderConfig {
    /// Samples per batch on this rank.
    pub batch_size: usize,
    pub workers: usize,
    pub prefetch: usize,
    pub seed: u64,
    pub rank: usize,
    pub world: usize,
    /// Train: shuffle, drop the incomplete tail, equal counts per rank. Eval: none of these.
    pub train: bool,
    /// Shard shuffle buffer `(size, initial)`, timm's 8192 / 2048.
    pub shuffle_buffer: (usize, usize),
    pub output: Output,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            batch_size: 32,
            workers: 2,
            prefetch: 2,
            seed: 42,
            rank: 0,
            world: 1,
            train: true,
            shuffle_buffer: (8192, 2048),
            output: Output::F32,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub epoch: u64,
    /// Index of this batch in the epoch (the global step within the epoch).
    pub step: usize,
    /// `[B, 3, H, W]` with `B` = the samples that decoded.
    pub shape: [usize; 4],
    pub f32: Vec<f32>,
    pub u8: Vec<u8>,
    /// With `u8` training output: RandomErasing boxes `(row, box)` to apply after normalising.
    pub erasures: Vec<(usize, Erasure)>,
    pub labels: Vec<usize>,
    /// Sample identities: the index (ImageFolder) or the key (shards).
    pub ids: Vec<String>,
}

/// Counts and names the samples that were left out.
#[derive(Debug, Default)]
pub struct CorruptLog {
    count: AtomicUsize,
    recent: Mutex<Vec<String>>,
}

impl CorruptLog {
    fn record(&self, what: String) {
        tracing::warn!(sample = %what, "skipped unreadable sample");
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut recent = self.recent.lock().unwrap();
        if recent.len() < 1000 {
            recent.push(what);
        }
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// The first (up to 1000) skipped samples with the reason.
    pub fn entries(&self) -> Vec<String> {
        self.recent.lock().unwrap().clone()
    }
}

pub struct Loader {
    source: Source,
    pipeline: Pipeline,
    cfg: LoaderConfig,
    corrupt: Arc<CorruptLog>,
}

/// Turns encoded images into batch rows; one per worker thread (it owns the JPEG decoder and
/// the resize buffers).
struct Worker {
    decoder: Decoder,
    transform: WorkerTransform,
}

enum WorkerTransform {
    Train(TrainTransform),
    Eval(EvalTransform),
}

impl Worker {
    fn new(p: &Pipeline) -> Result<Self, DataError> {
        let transform = match p {
            Pipeline::Train(cfg) => {
                WorkerTransform::Train(TrainTransform::new(cfg.clone()).map_err(DataError::Config)?)
            }
            Pipeline::Eval(e) => WorkerTransform::Eval(e.clone()),
        };
        Ok(Self { decoder: Decoder::new(), transform })
    }

    fn process(
        &mut self,
        bytes: &[u8],
        rng: &mut Rng,
        output: Output,
        f32_out: &mut [f32],
        u8_out: &mut [u8],
    ) -> Result<Vec<Erasure>, String> {
        match &mut self.transform {
            WorkerTransform::Train(t) => {
                let aug = t.augment_encoded(&mut self.decoder, bytes, rng)?;
                match output {
                    Output::F32 => t.finish_f32(&aug, rng, f32_out),
                    Output::U8 => return Ok(t.finish_u8(&aug, rng, u8_out)),
                }
            }
            WorkerTransform::Eval(e) => {
                let img = self.decoder.decode(bytes)?;
                let crop = e.resize_and_crop(&img).map_err(|e| e.to_string())?;
                match output {
                    Output::F32 => normalize_chw(&crop, e.mean, e.std, f32_out),
                    Output::U8 => to_chw_u8(&crop, u8_out),
                }
            }
        }
        Ok(vec![])
    }
}

/// Accumulates one batch's rows.
struct BatchBuilder {
    batch: Batch,
    per_image: usize,
}

impl BatchBuilder {
    fn new(epoch: u64, step: usize, capacity: usize, [h, w]: [usize; 2], output: Output) -> Self {
        let per_image = 3 * h * w;
        let (f, u) = match output {
            Output::F32 => (vec![0f32; capacity * per_image], vec![]),
            Output::U8 => (vec![], vec![0u8; capacity * per_image]),
        };
        Self {
            batch: Batch {
                epoch,
                step,
                shape: [0, 3, h, w],
                f32: f,
                u8: u,
                erasures: vec![],
                labels: vec![],
                ids: vec![],
            },
            per_image,
        }
    }

    fn push(
        &mut self,
        worker: &mut Worker,
        bytes: &[u8],
        label: usize,
        id: String,
        rng: &mut Rng,
        output: Output,
    ) -> Result<(), String> {
        let n = self.batch.labels.len();
        let range = n * self.per_image..(n + 1) * self.per_image;
        let (f, u) = match output {
            Output::F32 => (&mut self.batch.f32[range], &mut [][..]),
            Output::U8 => (&mut [][..], &mut self.batch.u8[range]),
        };
        let erasures = worker.process(bytes, rng, output, f, u)?;
        self.batch.erasures.extend(erasures.into_iter().map(|e| (n, e)));
        self.batch.labels.push(label);
        self.batch.ids.push(id);
        Ok(())
    }

    fn finish(mut self) -> Batch {
        let n = self.batch.labels.len();
        self.batch.shape[0] = n;
        self.batch.f32.truncate(n * self.per_image);
        self.batch.u8.truncate(n * self.per_image);
        self.batch
    }
}

impl Loader {
    pub fn new(source: Source, pipeline: Pipeline, cfg: LoaderConfig) -> Result<Self, DataError> {
        let bad = |m: String| Err(DataError::Config(m));
        if cfg.batch_size == 0 || cfg.workers == 0 || cfg.prefetch == 0 {
            return bad("batch_size, workers and prefetch must be positive".into());
        }
        if cfg.world == 0 || cfg.rank >= cfg.world {
            return bad(format!("rank {} is not in a world of {}", cfg.rank, cfg.world));
        }
        if let Source::Shards { shards, .. } = &source {
            if shards.len() < cfg.world * cfg.workers {
                return bad(format!(
                    "{} shards cannot feed {} ranks × {} workers; use fewer workers or more shards",
                    shards.len(),
                    cfg.world,
                    cfg.workers
                ));
            }
        }
        Worker::new(&pipeline)?;
        Ok(Self { source, pipeline, cfg, corrupt: Arc::new(CorruptLog::default()) })
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.cfg
    }

    pub fn corrupt(&self) -> &CorruptLog {
        &self.corrupt
    }

    fn index_sampler(&self) -> IndexSampler {
        let c = &self.cfg;
        IndexSampler {
            len: self.source.len(),
            seed: c.seed,
            shuffle: c.train,
            global_batch: c.batch_size * c.world,
            rank: c.rank,
            world: c.world,
        }
    }

    fn shard_plan(&self) -> ShardPlan {
        let c = &self.cfg;
        let num_shards = match &self.source {
            Source::Shards { shards, .. } => shards.len(),
            Source::Folder(_) => 0,
        };
        ShardPlan { num_shards, seed: c.seed, shuffle: c.train, rank: c.rank, world: c.world, workers: c.workers }
    }

    /// Batches per epoch on this rank (for eval over shards: not known in advance).
    pub fn steps_per_epoch(&self) -> Option<usize> {
        let c = &self.cfg;
        match (&self.source, c.train) {
            (Source::Folder(_), _) => Some(self.index_sampler().steps_per_epoch()),
            (Source::Shards { num_samples, .. }, true) => {
                Some(c.workers * self.shard_plan().samples_per_worker(*num_samples, c.batch_size) / c.batch_size)
            }
            (Source::Shards { .. }, false) => None,
        }
    }

    /// Iterate the batches of `epoch`, starting at `start_step` (for resume).
    pub fn epoch(&self, epoch: u64, start_step: usize) -> EpochIter {
        let w_count = self.cfg.workers;
        let mut receivers = Vec::with_capacity(w_count);
        let mut handles = Vec::with_capacity(w_count);
        let order = match &self.source {
            Source::Folder(_) => Some(Arc::new(self.index_sampler().epoch_order(epoch))),
            Source::Shards { .. } => None,
        };
        for w in 0..w_count {
            let (tx, rx) = sync_channel(self.cfg.prefetch);
            receivers.push(rx);
            let ctx = WorkerCtx {
                source: self.source.clone(),
                pipeline: self.pipeline.clone(),
                cfg: self.cfg.clone(),
                corrupt: self.corrupt.clone(),
                sampler: self.index_sampler(),
                plan: self.shard_plan(),
                order: order.clone(),
                epoch,
                worker: w,
                start_step,
            };
            handles.push(std::thread::spawn(move || ctx.run(tx)));
        }
        EpochIter { receivers, live: vec![true; w_count], next: start_step, handles }
    }
}

struct WorkerCtx {
    source: Source,
    pipeline: Pipeline,
    cfg: LoaderConfig,
    corrupt: Arc<CorruptLog>,
    sampler: IndexSampler,
    plan: ShardPlan,
    order: Option<Arc<Vec<usize>>>,
    epoch: u64,
    worker: usize,
    start_step: usize,
}

type Tx = SyncSender<Result<Batch, DataError>>;

impl WorkerCtx {
    fn run(self, tx: Tx) {
        let mut worker = match Worker::new(&self.pipeline) {
            Ok(w) => w,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        match &self.source {
            Source::Folder(folder) => self.run_folder(folder, &mut worker, &tx),
            Source::Shards { shards, num_samples, labels } => {
                self.run_shards(shards, *num_samples, labels, &mut worker, &tx)
            }
        }
    }

    fn rng(&self, sample: u64) -> Rng {
        Rng::for_sample(self.cfg.seed, self.epoch, sample, 0)
    }

    fn decode_into(
        &self,
        builder: &mut BatchBuilder,
        worker: &mut Worker,
        bytes: &[u8],
        label: usize,
        id: String,
        what: &str,
        rng: &mut Rng,
    ) {
        if let Err(reason) = builder.push(worker, bytes, label, id, rng, self.cfg.output) {
            self.corrupt.record(format!("{what}: {reason}"));
        }
    }

    fn run_folder(&self, folder: &ImageFolder, worker: &mut Worker, tx: &Tx) {
        let order = self.order.as_ref().expect("folder order");
        let c = &self.cfg;
        let img_size = self.pipeline.img_size();
        for step in (self.start_step..self.sampler.steps_per_epoch()).filter(|s| s % c.workers == self.worker) {
            let range = self.sampler.rank_range(step);
            let mut builder = BatchBuilder::new(self.epoch, step, range.len(), img_size, c.output);
            for &index in &order[range] {
                let path = folder.samples[index].0.display().to_string();
                match folder.read(index) {
                    Ok((bytes, label)) => {
                        let mut rng = self.rng(index as u64);
                        self.decode_into(&mut builder, worker, &bytes, label, index.to_string(), &path, &mut rng)
                    }
                    Err(e) => self.corrupt.record(e.to_string()),
                }
            }
            if tx.send(Ok(builder.finish())).is_err() {
                return;
            }
        }
    }

    fn run_shards(&self, shards: &[PathBuf], num_samples: usize, labels: &LabelSource, worker: &mut Worker, tx: &Tx) {
        let c = &self.cfg;
        let mine = self.plan.worker_shards(self.epoch, self.worker);
        let img_size = self.pipeline.img_size();
        // Samples of this worker's shards, in order; train wraps around (timm's `with_epoch`).
        let corrupt = self.corrupt.clone();
        let cycle = c.train;
        let mut stream = ShardStream {
            shards: mine.iter().map(|i| shards[*i].clone()).collect(),
            labels: labels.clone(),
            next: 0,
            reader: None,
            cycle,
            corrupt,
            yielded_any: false,
        };
        let buffer_seed = Rng::for_sample(c.seed, self.epoch, (c.rank * c.workers + self.worker) as u64, 1);
        let mut shuffle =
            ShuffleBuffer::new(if c.train { c.shuffle_buffer.0 } else { 1 }, c.shuffle_buffer.1, buffer_seed);
        let quota = if c.train { Some(self.plan.samples_per_worker(num_samples, c.batch_size)) } else { None };
        // Batches this worker already delivered before `start_step` (for resume).
        let done_batches = (self.start_step + c.workers - 1 - self.worker) / c.workers;
        let mut taken = 0usize;
        let mut local_batch = 0usize;
        loop {
            let mut raw: Vec<WdsSample> = Vec::with_capacity(c.batch_size);
            while raw.len() < c.batch_size && quota.is_none_or(|q| taken < q) {
                match shuffle.next(&mut stream) {
                    Some(s) => {
                        raw.push(s);
                        taken += 1;
                    }
                    None => break,
                }
            }
            if raw.is_empty() {
                return;
            }
            let step = self.worker + local_batch * c.workers;
            local_batch += 1;
            if local_batch <= done_batches {
                continue; // resumed past this batch: read to keep the stream in step, not decoded
            }
            let mut builder = BatchBuilder::new(self.epoch, step, raw.len(), img_size, c.output);
            for s in raw {
                let what = format!("sample '{}'", s.key);
                match (s.image, s.label) {
                    (Some(bytes), Some(label)) => {
                        let mut rng = self.rng(key_id(&s.key));
                        self.decode_into(&mut builder, worker, &bytes, label, s.key.clone(), &what, &mut rng)
                    }
                    (None, _) => self.corrupt.record(format!("{what}: no image member")),
                    (_, None) => self.corrupt.record(format!("{what}: no label")),
                }
            }
            if tx.send(Ok(builder.finish())).is_err() {
                return;
            }
        }
    }
}

/// This worker's shards as one sample stream; a damaged shard is logged and skipped.
struct ShardStream {
    shards: Vec<PathBuf>,
    labels: LabelSource,
    next: usize,
    reader: Option<ShardReader>,
    cycle: bool,
    corrupt: Arc<CorruptLog>,
    yielded_any: bool,
}

impl Iterator for ShardStream {
    type Item = WdsSample;

    fn next(&mut self) -> Option<WdsSample> {
        loop {
            if let Some(reader) = &mut self.reader {
                match reader.next_sample() {
                    Some(Ok(s)) => {
                        self.yielded_any = true;
                        return Some(s);
                    }
                    Some(Err(e)) => {
                        self.corrupt.record(e.to_string());
                        self.reader = None;
                    }
                    None => self.reader = None,
                }
            }
            if self.next >= self.shards.len() {
                // Wrap around only if a full pass produced something (never spin on empty shards).
                if !self.cycle || !self.yielded_any {
                    return None;
                }
                self.next = 0;
                self.yielded_any = false;
            }
            let path = &self.shards[self.next];
            self.next += 1;
            match ShardReader::open(path, self.labels.clone()) {
                Ok(r) => self.reader = Some(r),
                Err(e) => self.corrupt.record(e.to_string()),
            }
        }
    }
}

/// The batches of one epoch, in step order.
pub struct EpochIter {
    receivers: Vec<Receiver<Result<Batch, DataError>>>,
    live: Vec<bool>,
    next: usize,
    handles: Vec<JoinHandle<()>>,
}

impl Iterator for EpochIter {
    type Item = Result<Batch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        let workers = self.receivers.len();
        for _ in 0..workers {
            let w = self.next % workers;
            self.next += 1;
            if !self.live[w] {
                continue;
            }
            match self.receivers[w].recv() {
                Ok(item) => return Some(item),
                Err(_) => self.live[w] = false,
            }
        }
        None
    }
}

impl Drop for EpochIter {
    fn drop(&mut self) {
        self.receivers.clear(); // workers see a closed channel and stop
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
