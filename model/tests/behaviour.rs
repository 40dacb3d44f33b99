//! Behaviour the golden fixtures do not pin down: index tables from the spec, TF padding,
//! train-only randomness, non-square inputs, features-only mode, classifier reset, init.

use std::collections::HashMap;

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Param};
use burn::tensor::{Distribution, Tensor, TensorData};
use model::blocks::conv_blocks::make_divisible;
use model::blocks::rel_pos::{rel_coords_log_cr, relative_position_index, RelPos, RelPosBiasTf};
use model::config::WeightInit;
use model::golden::{case_dirs, golden_dir, GoldenCase};
use model::layers::conv::same_pad_total;
use model::model::drop_path_rates;
use model::registry::lookup;
use model::state_dict::Values;
use model::{MaxxVit, MaxxVitConfig, ModelArgs};

type Ad = Autodiff<Flex>;

fn case(name: &str) -> GoldenCase {
    let dir = case_dirs(&golden_dir()).unwrap().into_iter().find(|d| d.ends_with(name)).expect(name);
    GoldenCase::load(&dir).unwrap()
}

fn values(t: Tensor<Flex, 2>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

#[test]
fn relative_position_index_matches_spec_examples() {
    assert_eq!(relative_position_index([2, 2]), vec![4, 3, 1, 0, 5, 4, 2, 1, 7, 6, 4, 3, 8, 7, 5, 4]);
    let expected_2x3 = [
        [7, 6, 5, 2, 1, 0],
        [8, 7, 6, 3, 2, 1],
        [9, 8, 7, 4, 3, 2],
        [12, 11, 10, 7, 6, 5],
        [13, 12, 11, 8, 7, 6],
        [14, 13, 12, 9, 8, 7],
    ];
    assert_eq!(relative_position_index([2, 3]), expected_2x3.concat());
}

#[test]
fn log_coords_are_mode_cr() {
    let coords = rel_coords_log_cr([3, 3]);
    let channel0: Vec<f32> = (0..5).map(|a| coords[(a * 5) * 2]).collect();
    let expected = [-1.098612, -0.693147, 0.0, 0.693147, 1.098612];
    for (got, want) in channel0.iter().zip(expected) {
        assert!((got - want).abs() < 1e-6, "{channel0:?}");
    }
    // Channel 1 varies along columns.
    assert!((coords[1] - -1.098612).abs() < 1e-6 && (coords[2 * 4 + 1] - 1.098612).abs() < 1e-6);
}

#[test]
fn tf_bias_is_key_minus_query() {
    let device = Default::default();
    let RelPos::BiasTf(mut r) = RelPos::<Flex>::new(
        model::config::RelPosType::BiasTf,
        [2, 2],
        1,
        0,
        0.0,
        model::layers::InitRole::TorchDefault,
        &device,
    )
    .unwrap() else {
        unreachable!()
    };
    let table: Vec<f32> = (0..9).map(|v| v as f32).collect();
    r = RelPosBiasTf {
        relative_position_bias_table: Param::from_data(TensorData::new(table, [1, 3, 3]), &device),
        ..r
    };
    let bias = RelPos::BiasTf(r).bias().reshape([4, 4]);
    assert_eq!(values(bias), vec![4., 5., 7., 8., 3., 4., 6., 7., 1., 2., 4., 5., 0., 1., 3., 4.]);
}

#[test]
fn tf_same_padding_amounts() {
    // k3 s2 on even sizes: total 1 → 0 before, 1 after (spec §2.1).
    assert_eq!(same_pad_total(64, 3, 2, 1), 1);
    assert_eq!(same_pad_total(65, 3, 2, 1), 2);
    assert_eq!(same_pad_total(64, 3, 1, 1), 2);
    assert_eq!(same_pad_total(64, 2, 2, 1), 0);
}

#[test]
fn small_arithmetic_helpers_follow_timm() {
    assert_eq!(make_divisible(64.0 * 4.0, 8), 256);
    assert_eq!(make_divisible(6.0 * 4.0, 8), 24);
    assert_eq!(make_divisible(3.0, 8), 8);
    let dpr = drop_path_rates(0.3, &[1, 2, 1]);
    assert_eq!(dpr.len(), 3);
    let flat: Vec<f64> = dpr.concat();
    for (got, want) in flat.iter().zip([0.0, 0.1, 0.2, 0.3]) {
        assert!((got - want).abs() < 1e-12, "{flat:?}");
    }
}

#[test]
fn non_square_inputs_run_with_non_square_windows() {
    let device = Default::default();
    for name in ["maxvit_nano_rw", "coatnet_rmlp_1_rw", "maxvit_tiny_tf"] {
        let c = case(name);
        let args = ModelArgs { img_size: [64, 96], ..c.args.clone() };
        let model = MaxxVit::<Flex>::new(&c.cfg, &args, &device).unwrap();
        let x = Tensor::<Flex, 4>::random([2, 3, 64, 96], Distribution::Normal(0.0, 1.0), &device);
        let inter = model.forward_intermediates(x.clone());
        assert_eq!(inter.stem.dims(), [2, c.cfg.stem_width.pair()[1], 32, 48], "{name}");
        assert_eq!(inter.stages[3].dims()[2..], [2, 3], "{name}");
        assert_eq!(model.forward(x).dims(), [2, c.args.num_classes], "{name}");
    }
    // Windows (64/32, 96/32) = (2, 3): tables have (2·2−1)(2·3−1) = 15 rows.
    let c = case("maxvit_nano_rw");
    let model = MaxxVit::<Flex>::new(&c.cfg, &ModelArgs { img_size: [64, 96], ..c.args.clone() }, &device).unwrap();
    let table = model.state_dict_keys().into_iter().find(|k| k.key.ends_with("relative_position_bias_table")).unwrap();
    assert_eq!(table.shape[0], 15);
}

#[test]
fn features_only_renames_stages_and_drops_norm_and_head() {
    let c = case("maxxvit_rmlp_nano_rw");
    let args = ModelArgs { features_only: true, ..c.args.clone() };
    let model = MaxxVit::<Flex>::new(&c.cfg, &args, &Default::default()).unwrap();
    let keys = model.state_dict_keys();
    assert!(keys.iter().all(|k| k.key.starts_with("stem.") || k.key.starts_with("stages_")), "{:?}", keys[0]);
    assert!(keys.iter().any(|k| k.key.starts_with("stages_3.blocks.0.")));
    let info = model.feature_info();
    assert_eq!(info.iter().map(|f| f.reduction).collect::<Vec<_>>(), vec![2, 4, 8, 16, 32]);
    assert_eq!(info.iter().map(|f| f.num_chs).collect::<Vec<_>>(), vec![8, 8, 16, 32, 32]);
}

#[test]
fn reset_classifier_replaces_only_the_head() {
    let device = Default::default();
    let (entry, _) = lookup("test_maxvit").unwrap();
    let model =
        MaxxVit::<Flex>::new(&entry.config(), &ModelArgs { num_classes: 11821, ..entry.default_args() }, &device)
            .unwrap();
    let before: HashMap<String, Vec<usize>> = model.state_dict_keys().into_iter().map(|k| (k.key, k.shape)).collect();
    let model = model.reset_classifier(1000, &device);
    let after: HashMap<String, Vec<usize>> = model.state_dict_keys().into_iter().map(|k| (k.key, k.shape)).collect();
    assert_eq!(before["head.fc.weight"], vec![11821, 128]);
    assert_eq!(after["head.fc.weight"], vec![1000, 128]);
    assert_eq!(after["head.fc.bias"], vec![1000]);
    assert_eq!(before.len(), after.len());
    assert!(before.iter().all(|(k, s)| k.starts_with("head.fc.") || &after[k] == s));
}

fn train_logits(model: &MaxxVit<Ad>, x: &Tensor<Ad, 4>) -> Vec<f32> {
    model.forward(x.clone()).into_data().to_vec::<f32>().unwrap()
}

#[test]
fn rel_pos_mlp_dropout_and_drop_path_act_only_in_training() {
    let device = Default::default();
    let c = case("maxvit_rmlp_small_rw");
    let x = Tensor::<Ad, 4>::random([2, 3, 96, 96], Distribution::Normal(0.0, 1.0), &device);
    for (label, args) in [
        ("rel-pos mlp dropout", ModelArgs { rel_pos_mlp_drop: 0.125, ..c.args.clone() }),
        ("drop path", ModelArgs { rel_pos_mlp_drop: 0.0, drop_path_rate: 0.5, ..c.args.clone() }),
    ] {
        let model = MaxxVit::<Ad>::new(&c.cfg, &args, &device).unwrap();
        let (a, b) = (train_logits(&model, &x), train_logits(&model, &x));
        assert_ne!(a, b, "{label}: training forwards should differ");
        let eval = model.valid();
        let xe = x.clone().inner();
        assert_eq!(
            eval.forward(xe.clone()).into_data(),
            eval.forward(xe).into_data(),
            "{label}: eval is deterministic"
        );
    }
    let quiet = MaxxVit::<Ad>::new(&c.cfg, &ModelArgs { rel_pos_mlp_drop: 0.0, ..c.args.clone() }, &device).unwrap();
    // Batch-norm stats move between calls, but with no randomness both calls see the same batch.
    let (a, b) = (train_logits(&quiet, &x), train_logits(&quiet, &x));
    assert_eq!(a, b);
}

fn std_of(v: &[f32]) -> f64 {
    let mean = v.iter().map(|x| *x as f64).sum::<f64>() / v.len() as f64;
    (v.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
}

fn by_key(model: &MaxxVit<Flex>) -> HashMap<String, Vec<f32>> {
    model
        .state_dict()
        .into_iter()
        .filter_map(|(k, v)| match v {
            Values::F32(v) => Some((k.key, v)),
            Values::I64(_) => None,
        })
        .collect()
}

#[test]
fn initialisation_follows_timm_schemes() {
    let device = Default::default();
    let (entry, _) = lookup("maxvit_rmlp_small_rw_224").unwrap();
    let cfg = MaxxVitConfig { depths: vec![1, 1, 1, 1], ..entry.config() };
    let model = MaxxVit::<Flex>::new(&cfg, &entry.default_args(), &device).unwrap();
    let w = by_key(&model);
    let close =
        |got: f64, want: f64, what: &str| assert!((got / want - 1.0).abs() < 0.1, "{what}: std {got:.5} vs {want:.5}");

    // vit_eff `_init_conv`: N(0, sqrt(2 / fan_out)), fan_out = k·k·out / groups.
    close(std_of(&w["stages.1.blocks.0.conv.conv1_1x1.weight"]), (2.0f64 / 384.0).sqrt(), "conv1_1x1");
    close(std_of(&w["stages.1.blocks.0.conv.conv2_kxk.weight"]), (2.0f64 / 9.0).sqrt(), "depthwise");
    // vit_eff `_init_transformer`: xavier_uniform, bias 0 or N(0, 1e-6) inside 'mlp'.
    let qkv = &w["stages.1.blocks.0.attn_block.attn.qkv.weight"];
    close(std_of(qkv), (6.0f64 / (192.0 + 576.0)).sqrt() / 3f64.sqrt(), "qkv xavier");
    assert!(w["stages.1.blocks.0.attn_block.attn.qkv.bias"].iter().all(|b| *b == 0.0));
    let mlp_bias = &w["stages.1.blocks.0.attn_block.mlp.fc1.bias"];
    assert!(mlp_bias.iter().any(|b| *b != 0.0) && mlp_bias.iter().all(|b| b.abs() < 1e-5));
    assert!(w["stages.1.blocks.0.attn_block.attn.rel_pos.mlp.fc2.bias"].iter().all(|b| b.abs() < 1e-5));
    // Head keeps nn.Linear's default U(±1/sqrt(fan_in)); LayerScale starts at init_values.
    let head = &w["head.fc.weight"];
    assert!(head.iter().all(|v| v.abs() <= 1.0 / 768f32.sqrt()));
    close(std_of(head), 1.0 / (768f64.sqrt() * 3f64.sqrt()), "head");
    assert!(w["stages.0.blocks.0.attn_grid.ls1.gamma"].iter().all(|g| *g == 1e-6));
    assert!(w["stem.norm1.weight"].iter().all(|g| *g == 1.0));

    // 'normal' scheme (coatnext): N(0, 0.02) for M/T blocks; stand-alone ConvNeXt keeps torch's default.
    let (entry, _) = lookup("coatnext_nano_rw_224").unwrap();
    assert_eq!(entry.config().weight_init, WeightInit::Normal);
    let cfg = MaxxVitConfig { depths: vec![1, 1, 1, 1], ..entry.config() };
    let w = by_key(&MaxxVit::<Flex>::new(&cfg, &entry.default_args(), &device).unwrap());
    close(std_of(&w["stages.2.blocks.0.attn.qkv.weight"]), 0.02, "T qkv normal");
    close(std_of(&w["stem.conv1.weight"]), 0.02, "stem normal");
    let dw = &w["stages.0.blocks.0.conv_dw.weight"];
    assert!(dw.iter().all(|v| v.abs() <= 1.0 / 49f32.sqrt()));
    close(std_of(dw), 1.0 / (49f64.sqrt() * 3f64.sqrt()), "stand-alone convnext default");
    assert!(w["stages.0.blocks.0.ls.gamma"].iter().all(|g| *g == 1e-5));
    close(std_of(&w["stages.2.blocks.0.attn.rel_pos.relative_position_bias_table"]), 0.02, "rel-pos table");
}
