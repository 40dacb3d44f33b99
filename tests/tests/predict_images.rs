//! Images → data's eval transform → trainer predict → model, against the model run directly.

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use data::eval::EvalTransform;
use image::{Rgb, RgbImage};
use model::golden::{case_dirs, golden_dir, read_tensors, rel_l2, GoldenCase};
use model::{save_safetensors, MaxxVit, SaveDtype};
use trainer::commands::predict::{run, PredictArgs};
use trainer::model_spec::ModelSpec;

#[test]
fn predicting_image_files_batch_by_batch_equals_one_direct_forward() {
    let dir = std::env::temp_dir().join(format!("maxxvit-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let case_dir = case_dirs(&golden_dir()).unwrap().into_iter().find(|d| d.ends_with("coatnet_bn_0_rw")).unwrap();
    let case = GoldenCase::load(&case_dir).unwrap();

    // Two images of different shapes and content.
    let images: Vec<_> = [(80u32, 100u32), (120, 70)]
        .iter()
        .enumerate()
        .map(|(i, (w, h))| {
            let img = RgbImage::from_fn(*w, *h, |x, y| {
                Rgb([(x * 3 + i as u32 * 50) as u8, (y * 2) as u8, ((x ^ y) * 5) as u8])
            });
            let path = dir.join(format!("img{i}.png"));
            img.save(&path).unwrap();
            path
        })
        .collect();

    let device = Default::default();
    let model = MaxxVit::<Flex>::new(&case.cfg, &case.args, &device).unwrap();
    let weights = dir.join("weights.safetensors");
    save_safetensors(&model, &weights, SaveDtype::F32).unwrap();

    let spec = ModelSpec::from_file(&case_dir.join("model.json")).unwrap();
    let out = dir.join("pred.safetensors");
    let args = PredictArgs {
        spec,
        weights,
        images: images.clone(),
        tensor_input: None,
        save: Some(out.clone()),
        labels: None,
        label_names: None,
        batch_size: 1,
    };
    run::<Flex>(&device, args).unwrap();

    let transform = EvalTransform {
        img_size: case.args.img_size,
        crop_pct: 0.95,
        crop_mode: "center".into(),
        mean: [0.5; 3],
        std: [0.5; 3],
        interpolation: "bicubic".into(),
    };
    let mut pixels = vec![];
    for path in &images {
        pixels.extend(transform.load(path).unwrap());
    }
    let [h, w] = case.args.img_size;
    let x = Tensor::<Flex, 4>::from_data(TensorData::new(pixels, [2, 3, h, w]), &device);
    let direct = model.forward(x).into_data().to_vec::<f32>().unwrap();
    let saved = read_tensors(&out).unwrap();
    assert_eq!(saved["logits"].shape, vec![2, case.args.num_classes]);
    let err = rel_l2(&saved["logits"].f32, &direct, 0.0);
    assert!(err < 1e-5, "rel err {err:.2e}");
}
