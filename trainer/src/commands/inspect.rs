//! `trainer inspect NAME`: the timm state-dict keys and shapes, feature info and pretrained cfg.

use anyhow::Result;
use burn::backend::Flex;
use model::MaxxVit;

use crate::model_spec::ModelSpec;

pub fn run(spec: &ModelSpec) -> Result<()> {
    let model = MaxxVit::<Flex>::new(&spec.cfg, &spec.args, &Default::default())?;
    let keys = model.state_dict_keys();
    for k in &keys {
        println!("{}\t{:?}\t{}", k.key, k.shape, k.dtype());
    }
    let params = super::models::param_count(&model);
    println!(
        "# {}: {} state_dict entries, {} parameters, {:.3} GMACs at {:?}",
        spec.name,
        keys.len(),
        params,
        model.macs(spec.args.img_size) as f64 / 1e9,
        spec.args.img_size
    );
    for f in model.feature_info() {
        println!("# feature {}: {} channels, reduction {}", f.module, f.num_chs, f.reduction);
    }
    if let Some(p) = spec.pretrained {
        println!(
            "# pretrained {}.{}: {} classes, input {:?}, crop_pct {}, crop_mode {}, mean {:?}, std {:?}, {}{}",
            p.model,
            p.tag,
            p.num_classes,
            p.input_size,
            p.crop_pct,
            p.crop_mode,
            p.mean,
            p.std,
            p.interpolation,
            p.hf_hub_id().map(|h| format!(", hub {h}")).unwrap_or_default()
        );
    }
    Ok(())
}
