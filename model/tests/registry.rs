//! The registry against timm itself: for all 58 names, the cfg, the pretrained cfgs and the
//! saved key set, shapes, dtypes and order equal `fixtures/timm_keys/maxxvit_family.json.gz`
//! (built lazily: no weight of the big models is allocated).

use std::io::Read;

use burn::backend::Flex;
use model::registry::{lookup, model_names};
use model::MaxxVit;
use serde_json::Value;

fn timm_keys() -> serde_json::Map<String, Value> {
    let path = model::golden::fixtures_dir().join("timm_keys/maxxvit_family.json.gz");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut text = String::new();
    flate2::read::GzDecoder::new(file).read_to_string(&mut text).unwrap();
    match serde_json::from_str(&text).unwrap() {
        Value::Object(map) => map,
        _ => panic!("unexpected json"),
    }
}

fn shape_of(v: &Value) -> Vec<usize> {
    v[0].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect()
}

#[test]
fn registry_names_are_timms_58() {
    let timm = timm_keys();
    let ours: Vec<&str> = model_names();
    let theirs: Vec<&str> = timm.keys().map(String::as_str).collect();
    assert_eq!(ours.len(), 58);
    assert_eq!(ours, theirs);
}

#[test]
fn registry_configs_and_pretrained_cfgs_equal_timms() {
    let mut failures = vec![];
    for (name, entry) in timm_keys() {
        let (ours, default_tag) = lookup(&name).unwrap();
        if ours.cfg_name != entry["model_cfg_name"] {
            failures.push(format!("{name}: cfg name {} vs {}", ours.cfg_name, entry["model_cfg_name"]));
        }
        let cfg = serde_json::to_value(ours.config()).unwrap();
        if cfg != entry["cfg"] {
            failures.push(format!("{name}: cfg differs\n ours: {cfg}\n timm: {}", entry["cfg"]));
        }
        if default_tag.tag != entry["default_tag"] {
            failures.push(format!("{name}: default tag {} vs {}", default_tag.tag, entry["default_tag"]));
        }
        let tags = entry["pretrained_cfgs"].as_object().unwrap();
        if tags.len() != ours.tags.len() {
            failures.push(format!("{name}: {} tags vs {}", ours.tags.len(), tags.len()));
        }
        for (tag, p) in tags {
            let Some(t) = ours.tag(tag) else {
                failures.push(format!("{name}: missing tag {tag}"));
                continue;
            };
            let checks = [
                ("num_classes", serde_json::json!(t.num_classes)),
                ("input_size", serde_json::json!(t.input_size)),
                ("crop_pct", serde_json::json!(t.crop_pct)),
                ("crop_mode", serde_json::json!(t.crop_mode)),
                ("mean", serde_json::json!(t.mean)),
                ("std", serde_json::json!(t.std)),
                ("interpolation", serde_json::json!(t.interpolation)),
                ("pool_size", serde_json::json!(t.pool_size)),
                ("hf_hub_id", serde_json::json!(t.hf_hub_id())),
                ("url", serde_json::json!(t.url)),
                ("first_conv", serde_json::json!(model::PretrainedCfg::FIRST_CONV)),
                ("classifier", serde_json::json!(model::PretrainedCfg::CLASSIFIER)),
            ];
            for (field, value) in checks {
                if p[field] != value {
                    failures.push(format!("{name}.{tag}: {field} {value} vs {}", p[field]));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_registered_model_has_timms_state_dict_layout() {
    let device = Default::default();
    let mut failures = vec![];
    for (name, entry) in timm_keys() {
        let (reg, _) = lookup(&name).unwrap();
        let model = MaxxVit::<Flex>::new(&reg.config(), &reg.default_args(), &device).unwrap();
        let keys = model.state_dict_keys();
        let expected: Vec<&str> =
            entry["state_dict_keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
        let ours: Vec<&str> = keys.iter().map(|k| k.key.as_str()).collect();
        if ours != expected {
            let missing: Vec<_> = expected.iter().filter(|k| !ours.contains(k)).collect();
            let extra: Vec<_> = ours.iter().filter(|k| !expected.contains(k)).collect();
            failures.push(format!("{name}: key order/set differs; missing {missing:?}; extra {extra:?}"));
            continue;
        }
        let params = entry["params"].as_object().unwrap();
        let buffers = entry["buffers_persistent_shapes"].as_object().unwrap();
        let mut num_params = 0;
        for info in &keys {
            let timm = params.get(&info.key).or_else(|| buffers.get(&info.key)).unwrap();
            let (shape, dtype) = (shape_of(timm), timm[1].as_str().unwrap());
            if shape != info.shape || dtype != info.dtype() {
                failures.push(format!(
                    "{name}: {} is {:?} {} in timm, {:?} {} here",
                    info.key,
                    shape,
                    dtype,
                    info.shape,
                    info.dtype()
                ));
            }
            if params.contains_key(&info.key) {
                num_params += info.shape.iter().product::<usize>();
            }
        }
        if serde_json::json!(num_params) != entry["num_params"] {
            failures.push(format!("{name}: {num_params} params vs {}", entry["num_params"]));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn macs_match_timms_published_figure() {
    // Spec §5.3: maxxvitv2_rmlp_base_rw_224.sw_in12k is ≈ 24.15 GMACs (FlopCounter / 2).
    let (reg, tag) = lookup("maxxvitv2_rmlp_base_rw_224.sw_in12k").unwrap();
    let args = model::ModelArgs { num_classes: tag.num_classes, ..reg.default_args() };
    let model = MaxxVit::<Flex>::new(&reg.config(), &args, &Default::default()).unwrap();
    let gmacs = model.macs(args.img_size) as f64 / 1e9;
    assert!((gmacs - 24.15).abs() < 0.05, "{gmacs:.3} GMACs");
}
