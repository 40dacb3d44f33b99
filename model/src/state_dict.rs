//! timm `state_dict()` naming and safetensors I/O, in one place (spec §4).
//!
//! Module field names follow timm's attribute names, so a key is the Burn module path with enum
//! variants left out (they stand for timm's `nn.Identity` / `nn.Sequential` choices). The only
//! renames are `features_only`'s `stages.N` → `stages_N` (spec §3.12).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::model::MaxxVit;
use crate::ModelError;

/// What a state-dict entry is in PyTorch terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Parameter,
    /// BatchNorm `running_mean` / `running_var`.
    Buffer,
    /// BatchNorm `num_batches_tracked`: an I64 scalar of shape `[]`.
    Counter,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub key: String,
    pub shape: Vec<usize>,
    pub kind: EntryKind,
}

impl KeyInfo {
    /// The safetensors dtype timm writes for this entry.
    pub fn dtype(&self) -> &'static str {
        if self.kind == EntryKind::Counter {
            "I64"
        } else {
            "F32"
        }
    }
}

/// Tracks the timm key of the module being visited by a `ModuleVisitor` / `ModuleMapper`:
/// call `enter` / `exit` from their `enter_module` / `exit_module` hooks.
#[derive(Debug, Default)]
pub struct KeyPath {
    parts: Vec<String>,
    features_only: bool,
}

impl KeyPath {
    pub fn new(features_only: bool) -> Self {
        Self { parts: vec![], features_only }
    }

    pub fn enter(&mut self, name: &str, container: &str) {
        if !container.starts_with("Enum:") {
            self.parts.push(name.to_string());
        }
    }

    pub fn exit(&mut self, container: &str) {
        if !container.starts_with("Enum:") {
            self.parts.pop();
        }
    }

    pub fn key(&self) -> String {
        let key = self.parts.join(".");
        match (self.features_only, key.strip_prefix("stages.")) {
            (true, Some(rest)) => format!("stages_{rest}"),
            _ => key,
        }
    }
}

fn kind_of(key: &str) -> EntryKind {
    if key.ends_with(".running_mean") || key.ends_with(".running_var") {
        EntryKind::Buffer
    } else {
        EntryKind::Parameter
    }
}

/// Sees every state-dict entry with its timm key.
trait KeyedVisitor<B: Backend> {
    fn float<const D: usize>(&mut self, key: String, param: &Param<Tensor<B, D>>);
    fn int<const D: usize>(&mut self, key: String, param: &Param<Tensor<B, D, Int>>);
}

/// Adapts a [`KeyedVisitor`] to Burn's visitor by tracking the module path.
struct Keyed<V> {
    path: KeyPath,
    inner: V,
}

impl<B: Backend, V: KeyedVisitor<B>> ModuleVisitor<B> for Keyed<V> {
    fn enter_module(&mut self, name: &str, container: &str) {
        self.path.enter(name, container);
    }

    fn exit_module(&mut self, _name: &str, container: &str) {
        self.path.exit(container);
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.inner.float(self.path.key(), param);
    }

    fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<B, D, Int>>) {
        self.inner.int(self.path.key(), param);
    }
}

fn visit_keyed<B: Backend, V: KeyedVisitor<B>>(model: &MaxxVit<B>, inner: V) -> V {
    let mut keyed = Keyed { path: KeyPath::new(model.args.features_only), inner };
    model.visit(&mut keyed);
    keyed.inner
}

struct KeyLister(Vec<KeyInfo>);

impl<B: Backend> KeyedVisitor<B> for KeyLister {
    fn float<const D: usize>(&mut self, key: String, param: &Param<Tensor<B, D>>) {
        let kind = kind_of(&key);
        // lazy_shape: listing keys of a big model must not sample its random init.
        self.0.push(KeyInfo { key, shape: param.lazy_shape().dims::<D>().to_vec(), kind });
    }

    fn int<const D: usize>(&mut self, key: String, _param: &Param<Tensor<B, D, Int>>) {
        self.0.push(KeyInfo { key, shape: vec![], kind: EntryKind::Counter });
    }
}

/// Values of one entry, in the layout timm's `state_dict()` has.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// Collects host values; `buffers_only` skips the trainable parameters.
struct ValueCollector {
    out: Vec<(KeyInfo, Values)>,
    buffers_only: bool,
}

impl<B: Backend> KeyedVisitor<B> for ValueCollector {
    fn float<const D: usize>(&mut self, key: String, param: &Param<Tensor<B, D>>) {
        if self.buffers_only && kind_of(&key) == EntryKind::Parameter {
            return;
        }
        let tensor = param.val();
        let shape = tensor.dims().to_vec();
        let data = tensor.into_data().convert::<f32>().to_vec::<f32>().expect("float tensor data");
        self.out.push((KeyInfo { kind: kind_of(&key), key, shape }, Values::F32(data)));
    }

    fn int<const D: usize>(&mut self, key: String, param: &Param<Tensor<B, D, Int>>) {
        let data = param.val().into_data().convert::<i64>().to_vec::<i64>().expect("int tensor data");
        self.out.push((KeyInfo { key, shape: vec![], kind: EntryKind::Counter }, Values::I64(data)));
    }
}

impl<B: Backend> MaxxVit<B> {
    /// Keys, shapes and kinds in timm's `state_dict()` order, without touching lazy weights.
    pub fn state_dict_keys(&self) -> Vec<KeyInfo> {
        visit_keyed(self, KeyLister(vec![])).0
    }

    /// The full state dict as host values (materialises lazy parameters).
    pub fn state_dict(&self) -> Vec<(KeyInfo, Values)> {
        visit_keyed(self, ValueCollector { out: vec![], buffers_only: false }).out
    }

    /// Only the persistent buffers (BatchNorm running stats and counters), as host values.
    pub fn buffer_state(&self) -> Vec<(KeyInfo, Values)> {
        visit_keyed(self, ValueCollector { out: vec![], buffers_only: true }).out
    }

    /// Replace the named entries with `entries` (as [`MaxxVit::state_dict`] returns them; the
    /// shapes are trusted). Parameters keep their autodiff setting.
    pub fn set_state(self, entries: Vec<(KeyInfo, Values)>) -> Self {
        let values = entries
            .into_iter()
            .map(|(info, v)| {
                let decoded = match v {
                    Values::F32(f) => Decoded::Floats(f, info.shape),
                    Values::I64(i) => Decoded::Count(i.first().copied().unwrap_or(0)),
                };
                (info.key, decoded)
            })
            .collect();
        let features_only = self.args.features_only;
        self.map(&mut Applier { path: KeyPath::new(features_only), values })
    }
}

/// Float precision for saved weights. Checkpoints keep F32; releases may use BF16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveDtype {
    F32,
    BF16,
    F16,
}

/// Serialise a state dict exactly as `safetensors.torch.save_file(model.state_dict())` lays it out.
pub fn serialize_state_dict(
    entries: &[(KeyInfo, Values)],
    dtype: SaveDtype,
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>, ModelError> {
    let mut buffers: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::with_capacity(entries.len());
    for (info, values) in entries {
        let (dt, bytes) = match values {
            Values::I64(v) => (Dtype::I64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            Values::F32(v) => match dtype {
                SaveDtype::F32 => (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
                SaveDtype::BF16 => {
                    (Dtype::BF16, v.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect())
                }
                SaveDtype::F16 => (Dtype::F16, v.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect()),
            },
        };
        buffers.push((info.key.clone(), dt, info.shape.clone(), bytes));
    }
    let views = buffers
        .iter()
        .map(|(key, dt, shape, bytes)| {
            let view = TensorView::new(*dt, shape.clone(), bytes)
                .map_err(|e| ModelError::Config(format!("tensor '{key}' cannot be serialised: {e:?}")))?;
            Ok((key.as_str(), view))
        })
        .collect::<Result<Vec<_>, ModelError>>()?;
    safetensors::serialize(views, &metadata).map_err(|e| ModelError::Config(format!("serialising state dict: {e:?}")))
}

/// Write `bytes` to `path` atomically: temp file in the same directory, fsync, rename, fsync dir.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    let io = |source| ModelError::Io { path: path.to_path_buf(), source };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// The header metadata `safetensors.torch.save_file` writes (and HF loaders look for).
pub fn torch_metadata() -> HashMap<String, String> {
    HashMap::from([("format".to_string(), "pt".to_string())])
}

/// Save the model's state dict in timm layout: the same bytes `safetensors.torch.save_file(
/// model.state_dict())` writes, so `timm.create_model(...).load_state_dict` takes it as is.
pub fn save_safetensors<B: Backend>(model: &MaxxVit<B>, path: &Path, dtype: SaveDtype) -> Result<(), ModelError> {
    write_atomic(path, &serialize_state_dict(&model.state_dict(), dtype, Some(torch_metadata()))?)
}

/// How strictly a checkpoint must match the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMode {
    /// Every key present with the model's shape; nothing extra (timm's `strict=True`).
    Strict,
    /// For fine-tuning: a classifier (`head.fc.*`) of another shape, or none, is skipped and
    /// keeps its fresh init; extra keys are reported and ignored. Everything else must match.
    FineTune,
}

/// What a load did, for logging.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    pub loaded: usize,
    pub skipped: Vec<String>,
    pub unexpected: Vec<String>,
    pub source_dtypes: Vec<String>,
}

/// Every way a file failed to match the model, named key by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadMismatch {
    pub path: PathBuf,
    pub missing: Vec<String>,
    pub unexpected: Vec<String>,
    /// `key: expected …, found …`.
    pub mismatched: Vec<String>,
}

impl fmt::Display for LoadMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} does not match the model:", self.path.display())?;
        for (label, keys) in
            [("missing", &self.missing), ("unexpected", &self.unexpected), ("mismatched", &self.mismatched)]
        {
            if !keys.is_empty() {
                write!(f, "\n  {} {label} key(s):", keys.len())?;
                for key in keys {
                    write!(f, "\n    {key}")?;
                }
            }
        }
        Ok(())
    }
}

fn is_classifier(key: &str) -> bool {
    key == "head.fc.weight" || key == "head.fc.bias"
}

fn decode_floats(view: &TensorView) -> Option<Vec<f32>> {
    let bytes = view.data();
    match view.dtype() {
        Dtype::F32 => Some(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()),
        Dtype::F64 => Some(bytes.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32).collect()),
        Dtype::BF16 => Some(bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect()),
        Dtype::F16 => Some(bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()),
        _ => None,
    }
}

fn decode_count(view: &TensorView) -> Option<i64> {
    let bytes = view.data();
    match view.dtype() {
        Dtype::I64 if bytes.len() == 8 => Some(i64::from_le_bytes(bytes.try_into().unwrap())),
        Dtype::I32 if bytes.len() == 4 => Some(i32::from_le_bytes(bytes.try_into().unwrap()) as i64),
        _ => None,
    }
}

/// Read a safetensors file, reporting the file for every failure.
pub fn read_file(path: &Path) -> Result<Vec<u8>, ModelError> {
    std::fs::read(path).map_err(|source| ModelError::Io { path: path.to_path_buf(), source })
}

pub fn parse_safetensors<'a>(path: &Path, bytes: &'a [u8]) -> Result<SafeTensors<'a>, ModelError> {
    SafeTensors::deserialize(bytes)
        .map_err(|e| ModelError::Format { path: path.to_path_buf(), reason: format!("{e:?}") })
}

enum Decoded {
    Floats(Vec<f32>, Vec<usize>),
    Count(i64),
}

struct Applier {
    path: KeyPath,
    values: HashMap<String, Decoded>,
}

impl<B: Backend> ModuleMapper<B> for Applier {
    fn enter_module(&mut self, name: &str, container: &str) {
        self.path.enter(name, container);
    }

    fn exit_module(&mut self, _name: &str, container: &str) {
        self.path.exit(container);
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        match self.values.remove(&self.path.key()) {
            Some(Decoded::Floats(values, shape)) => {
                let tensor = Tensor::from_data(TensorData::new(values, shape), &param.lazy_device());
                let id = param.id;
                param.transform_for_load(tensor, id)
            }
            _ => param,
        }
    }

    fn map_int<const D: usize>(&mut self, param: Param<Tensor<B, D, Int>>) -> Param<Tensor<B, D, Int>> {
        match self.values.remove(&self.path.key()) {
            Some(Decoded::Count(count)) => {
                let shape = param.val().shape();
                let tensor = Tensor::<B, 1, Int>::from_data(TensorData::new(vec![count], [1]), &param.device());
                Param::initialized(param.id, tensor.reshape(shape))
            }
            _ => param,
        }
    }
}

/// Every float entry (or only the BatchNorm buffers) as a detached 1-D tensor on the model's
/// device, counters as f32 (exact below 2^24): what data parallelism broadcasts without a trip
/// through host memory.
struct TensorCollector<B: Backend> {
    out: Vec<(String, Tensor<B, 1>)>,
    buffers_only: bool,
}

impl<B: Backend> KeyedVisitor<B> for TensorCollector<B> {
    fn float<const D: usize>(&mut self, key: String, param: &Param<Tensor<B, D>>) {
        if self.buffers_only && kind_of(&key) == EntryKind::Parameter {
            return;
        }
        // Burn's detach keeps require_grad; untracked, the tensors built from these (buckets,
        // slices) are leaves that set_flat_tensors can make trainable again.
        let t = param.val().detach().set_require_grad(false);
        let n = t.shape().num_elements();
        self.out.push((key, t.reshape([n])));
    }

    fn int<const D: usize>(&mut self, key: String, param: &Param<Tensor<B, D, Int>>) {
        let t = param.val();
        let n = t.shape().num_elements();
        self.out.push((key, t.reshape([n]).float()));
    }
}

/// Replaces entries by key with 1-D tensors of [`MaxxVit::flat_tensors`]' layout.
struct TensorApplier<B: Backend> {
    path: KeyPath,
    values: HashMap<String, Tensor<B, 1>>,
}

impl<B: Backend> ModuleMapper<B> for TensorApplier<B> {
    fn enter_module(&mut self, name: &str, container: &str) {
        self.path.enter(name, container);
    }

    fn exit_module(&mut self, _name: &str, container: &str) {
        self.path.exit(container);
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        match self.values.remove(&self.path.key()) {
            Some(flat) => {
                let tensor = flat.reshape(param.lazy_shape());
                let id = param.id;
                param.transform_for_load(tensor, id)
            }
            None => param,
        }
    }

    fn map_int<const D: usize>(&mut self, param: Param<Tensor<B, D, Int>>) -> Param<Tensor<B, D, Int>> {
        match self.values.remove(&self.path.key()) {
            Some(flat) => {
                let shape = param.val().shape();
                Param::initialized(param.id, flat.round().int().reshape(shape))
            }
            None => param,
        }
    }
}

impl<B: Backend> MaxxVit<B> {
    /// State-dict entries as 1-D device tensors, in state-dict order (see [`TensorCollector`]).
    pub fn flat_tensors(&self, buffers_only: bool) -> Vec<(String, Tensor<B, 1>)> {
        visit_keyed(self, TensorCollector { out: vec![], buffers_only }).out
    }

    /// Replace the named entries with 1-D tensors as [`MaxxVit::flat_tensors`] returns them.
    pub fn set_flat_tensors(self, values: HashMap<String, Tensor<B, 1>>) -> Self {
        let features_only = self.args.features_only;
        self.map(&mut TensorApplier { path: KeyPath::new(features_only), values })
    }
}

/// Load timm-layout weights into `model`. Shapes, dtypes and key sets are checked before any
/// tensor is replaced, so a failed load leaves the model as it was.
pub fn load_safetensors<B: Backend>(
    model: MaxxVit<B>,
    path: &Path,
    mode: LoadMode,
) -> Result<(MaxxVit<B>, LoadReport), ModelError> {
    let bytes = read_file(path)?;
    let file = parse_safetensors(path, &bytes)?;
    let expected = model.state_dict_keys();
    let mut mismatch = LoadMismatch { path: path.to_path_buf(), ..Default::default() };
    let mut report = LoadReport::default();
    let mut decoded = HashMap::new();
    let mut dtypes = BTreeMap::new();

    for info in &expected {
        let view = match file.tensor(&info.key) {
            Ok(view) => view,
            Err(_) if mode == LoadMode::FineTune && is_classifier(&info.key) => {
                report.skipped.push(format!("{} (not in file; keeps its fresh init)", info.key));
                continue;
            }
            Err(_) => {
                mismatch.missing.push(info.key.clone());
                continue;
            }
        };
        *dtypes.entry(format!("{:?}", view.dtype())).or_insert(0usize) += 1;
        let shape_ok = match info.kind {
            EntryKind::Counter => view.shape().iter().product::<usize>() == 1,
            _ => view.shape() == info.shape.as_slice(),
        };
        if !shape_ok {
            let msg = format!("{}: expected shape {:?}, found {:?}", info.key, info.shape, view.shape());
            if mode == LoadMode::FineTune && is_classifier(&info.key) {
                report.skipped.push(format!("{msg} (classifier replaced; keeps its fresh init)"));
            } else {
                mismatch.mismatched.push(msg);
            }
            continue;
        }
        let value = match info.kind {
            EntryKind::Counter => decode_count(&view).map(Decoded::Count),
            _ => decode_floats(&view).map(|v| Decoded::Floats(v, info.shape.clone())),
        };
        match value {
            Some(value) => {
                decoded.insert(info.key.clone(), value);
            }
            None => mismatch.mismatched.push(format!(
                "{}: expected dtype {} (or F16/BF16/F64 for floats), found {:?}",
                info.key,
                info.dtype(),
                view.dtype()
            )),
        }
    }
    let known: std::collections::HashSet<&str> = expected.iter().map(|k| k.key.as_str()).collect();
    let mut unexpected: Vec<String> =
        file.names().into_iter().filter(|k| !known.contains(k.as_str())).cloned().collect();
    unexpected.sort();
    match mode {
        LoadMode::Strict => mismatch.unexpected = unexpected,
        LoadMode::FineTune => report.unexpected = unexpected,
    }
    if !(mismatch.missing.is_empty() && mismatch.unexpected.is_empty() && mismatch.mismatched.is_empty()) {
        return Err(ModelError::Mismatch(Box::new(mismatch)));
    }
    report.loaded = decoded.len();
    report.source_dtypes = dtypes.into_iter().map(|(d, n)| format!("{d}×{n}")).collect();
    let features_only = model.args.features_only;
    let mut applier = Applier { path: KeyPath::new(features_only), values: decoded };
    let model = model.map(&mut applier);
    debug_assert!(applier.values.is_empty(), "every decoded tensor has a home");
    Ok((model, report))
}

struct GradCollector<'a, B: AutodiffBackend> {
    grads: &'a B::Gradients,
    out: Vec<(String, Vec<usize>, Option<Vec<f32>>)>,
}

impl<B: AutodiffBackend> KeyedVisitor<B> for GradCollector<'_, B> {
    fn float<const D: usize>(&mut self, key: String, param: &Param<Tensor<B, D>>) {
        if kind_of(&key) != EntryKind::Parameter {
            return;
        }
        let value = param.val();
        let grad = value.grad(self.grads).map(|g| g.into_data().convert::<f32>().to_vec::<f32>().expect("grad data"));
        self.out.push((key, value.dims().to_vec(), grad));
    }

    fn int<const D: usize>(&mut self, _key: String, _param: &Param<Tensor<B, D, Int>>) {}
}

impl<B: AutodiffBackend> MaxxVit<B> {
    /// Gradient of every parameter by timm key (`None` where the parameter got no gradient).
    pub fn gradients_by_key(&self, grads: &B::Gradients) -> Vec<(String, Vec<usize>, Option<Vec<f32>>)> {
        visit_keyed(self, GradCollector::<B> { grads, out: vec![] }).out
    }
}
