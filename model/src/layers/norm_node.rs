//! What the batch-norm and layer-norm autodiff nodes share: the state their backward keeps, and
//! the tracking of `y = norm(x; weight, bias)` as a node with parents `[x, weight, bias]`.

use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::ops::{Backward, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;

/// `x` (checkpointed), the weight (as the norm's forward read it: `[C]`, or broadcastable against
/// `x`), and the mean and σ (broadcastable against `x`).
#[derive(Debug, Clone)]
pub(super) struct NormSaved<I: Backend> {
    pub x: NodeId,
    pub weight: FloatTensor<I>,
    pub mean: FloatTensor<I>,
    pub std: FloatTensor<I>,
}

/// `y`, computed on the inner backend from `inputs`' primitives, as the output of `node`, which
/// keeps `weight` for its backward.
pub(super) fn track<I: Backend, N: Backward<I, 3, State = NormSaved<I>>>(
    node: N,
    [x, weight_in, bias]: [FloatTensor<Autodiff<I>>; 3],
    weight: FloatTensor<I>,
    y: FloatTensor<I>,
    mean: FloatTensor<I>,
    std: FloatTensor<I>,
) -> FloatTensor<Autodiff<I>> {
    let parents = [x.node.clone(), weight_in.node.clone(), bias.node.clone()];
    match node.prepare::<NoCheckpointing>(parents).compute_bound().stateful() {
        OpsKind::Tracked(mut prep) => {
            let saved = NormSaved { x: prep.checkpoint(&x), weight, mean, std };
            prep.finish(saved, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}
