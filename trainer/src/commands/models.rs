//! `trainer models`: every registered name with its size and cost at its default resolution.

use anyhow::Result;
use burn::backend::Flex;
use model::registry::{lookup, model_names};
use model::MaxxVit;

/// Parameters (not buffers) of a model, from lazy shapes.
pub fn param_count(model: &MaxxVit<Flex>) -> usize {
    model
        .state_dict_keys()
        .iter()
        .filter(|k| k.kind == model::state_dict::EntryKind::Parameter)
        .map(|k| k.shape.iter().product::<usize>())
        .sum()
}

pub fn run(filter: Option<&str>) -> Result<()> {
    println!("{:<30} {:>5} {:>8} {:>9} {:>7}  default tag", "model", "img", "classes", "params(M)", "GMACs");
    for name in model_names().into_iter().filter(|n| filter.is_none_or(|f| n.contains(f))) {
        let (entry, tag) = lookup(name)?;
        let args = entry.default_args();
        let model = MaxxVit::<Flex>::new(&entry.config(), &args, &Default::default())?;
        println!(
            "{:<30} {:>5} {:>8} {:>9.2} {:>7.2}  {}",
            name,
            args.img_size[0],
            args.num_classes,
            param_count(&model) as f64 / 1e6,
            model.macs(args.img_size) as f64 / 1e9,
            tag.tag
        );
    }
    Ok(())
}
