//! Persistent, non-trainable state updated during the forward pass (BatchNorm running stats and
//! batch counter), saved under its own name like a PyTorch `register_buffer`.
//!
//! Burn's `RunningState` averages per-thread updates and is read stale by visitors (the saved
//! running stats would lag one step, burn_stack.md §3), so this is a plain cell with value
//! semantics: `clone` copies the current value, a forward pass updates only its own module.

use std::sync::{Arc, Mutex};

use burn::module::{
    AutodiffModule, Content, Devices, Module, ModuleDisplay, ModuleDisplayDefault, ModuleMapper, ModuleVisitor, Param,
    ParamId,
};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};

/// A float (`F`) or integer (`I`) buffer; the kind only changes which visitor hook sees it.
#[derive(Debug)]
pub struct Buffer<T> {
    id: ParamId,
    value: Arc<Mutex<T>>,
}

impl<T: Clone> Clone for Buffer<T> {
    fn clone(&self) -> Self {
        Self::with_id(self.id, self.get())
    }
}

impl<T: Clone> Buffer<T> {
    pub fn new(value: T) -> Self {
        Self::with_id(ParamId::new(), value)
    }

    fn with_id(id: ParamId, value: T) -> Self {
        Self { id, value: Arc::new(Mutex::new(value)) }
    }

    pub fn get(&self) -> T {
        self.value.lock().expect("buffer lock poisoned").clone()
    }

    /// Replace the value in place (used by the owning module during a training forward).
    pub fn set(&self, value: T) {
        *self.value.lock().expect("buffer lock poisoned") = value;
    }
}

impl<T> ModuleDisplayDefault for Buffer<T> {
    fn content(&self, content: Content) -> Option<Content> {
        content.add_formatted(&"Buffer".to_string()).optional()
    }
}

impl<T> ModuleDisplay for Buffer<T> {}

macro_rules! buffer_module {
    ($kind:ty, $inner_kind:ty, $visit:ident, $map:ident) => {
        impl<B: Backend, const D: usize> Module<B> for Buffer<Tensor<B, D, $kind>> {
            type Record = Param<Tensor<B, D, $kind>>;

            fn visit<V: ModuleVisitor<B>>(&self, visitor: &mut V) {
                visitor.$visit(&Param::initialized(self.id, self.get()));
            }

            fn map<M: ModuleMapper<B>>(self, mapper: &mut M) -> Self {
                let (id, value, _) = mapper.$map(Param::initialized(self.id, self.get())).consume();
                Self::with_id(id, value)
            }

            fn into_record(self) -> Self::Record {
                Param::initialized(self.id, self.get())
            }

            fn load_record(self, record: Self::Record) -> Self {
                let device = self.get().device();
                Self::with_id(record.id, record.val().to_device(&device))
            }

            fn to_device(self, device: &B::Device) -> Self {
                Self::with_id(self.id, self.get().to_device(device))
            }

            fn fork(self, device: &B::Device) -> Self {
                self.to_device(device)
            }

            fn collect_devices(&self, mut devices: Devices<B>) -> Devices<B> {
                let device = self.get().device();
                if !devices.contains(&device) {
                    devices.push(device);
                }
                devices
            }
        }

        impl<B: AutodiffBackend, const D: usize> AutodiffModule<B> for Buffer<Tensor<B, D, $kind>> {
            type InnerModule = Buffer<Tensor<B::InnerBackend, D, $inner_kind>>;

            fn valid(&self) -> Self::InnerModule {
                Buffer::with_id(self.id, self.get().inner())
            }

            fn from_inner(module: Self::InnerModule) -> Self {
                Buffer::with_id(module.id, Tensor::from_inner(module.get()))
            }
        }
    };
}

buffer_module!(burn::tensor::Float, burn::tensor::Float, visit_float, map_float);
buffer_module!(Int, Int, visit_int, map_int);
