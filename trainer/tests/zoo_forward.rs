//! Every registry model runs forward on libtorch and produces the shapes the pure-Rust shape
//! inference promised, at every node that has parameters and at the output.

use models::zoo::REGISTRY;
use tch::{Device, Kind, Tensor};
use trainer::net::Net;

#[test]
fn every_registry_model_runs_forward_with_the_inferred_output_shape() {
    tch::manual_seed(0);
    for m in REGISTRY {
        let g = models::zoo::build(m.name, Some(11), None).unwrap();
        let net = Net::new(g, Device::Cpu).unwrap();
        let [c, h, w] = m.input;
        let x = Tensor::randn([2, c as i64, h as i64, w as i64], (Kind::Float, Device::Cpu));
        if let Some(r) = net.graph.detector.as_ref().and_then(|d| d.rcnn.clone()) {
            // a Faster R-CNN: per image the RPN's rows, per region the 12 classes and 4 × 11 codes
            let out = |name: &str| net.graph.extra_outputs.iter().find(|o| o.name == name).unwrap().node;
            let roi = net.graph.roi_node().unwrap();
            let a = net.graph.detector.as_ref().unwrap().num_priors() as i64;
            let image = tch::no_grad(|| net.forward_nodes(&x, false, &[out(&r.scores_output), out(&r.codes_output), net.graph.nodes[roi].inputs[0]]));
            assert_eq!((image[0].size(), image[1].size()), (vec![2, a, 1], vec![2, a, 4]), "{}", m.name);
            let rois = Tensor::from_slice(&[0.0f32, 0.0, 0.0, w as f32, h as f32, 1.0, 8.0, 4.0, 40.0, 30.0]).view([2, 5]);
            let region = tch::no_grad(|| net.forward_rois(&image[2], &rois, false, &net.graph.output_nodes()[..2]));
            assert_eq!((region[0].size(), region[1].size()), (vec![2, 12], vec![2, 44]), "{}", m.name);
            assert!(region[0].isfinite().all().int64_value(&[]) == 1, "{}: non-finite logits", m.name);
            continue;
        }
        let y = tch::no_grad(|| net.forward(&x, false));
        match &net.graph.detector {
            // a detector: one row per prior, the background and 11 classes; 4 box codes per prior
            Some(d) => {
                let p = d.num_priors() as i64;
                assert_eq!(y.size(), [2, p, 12], "{}", m.name);
                let outs = tch::no_grad(|| net.forward_outputs(&x, false));
                assert_eq!(outs[1].size(), [2, p, 4], "{}", m.name);
            }
            None => assert_eq!(y.size(), [2, 11], "{}", m.name),
        }
        assert!(y.isfinite().all().int64_value(&[]) == 1, "{}: non-finite logits", m.name);
        // eval mode is deterministic; train mode (dropout, batch statistics) is not the same function
        let again = tch::no_grad(|| net.forward(&x, false));
        assert!(y.equal(&again), "{}", m.name);
    }
}

#[test]
fn initialisers_follow_the_models_scheme() {
    tch::manual_seed(1);
    // EmotionVGGNet: he_normal, truncated at 2 std of sqrt(2 / fan_in) / 0.8796
    let net = Net::new(models::zoo::build("emotion-vgg", None, None).unwrap(), Device::Cpu).unwrap();
    let w = &net.params["block2.conv1.weight"]; // fan_in 32 * 9
    let std = (2.0f64 / 288.0).sqrt();
    let max = w.abs().max().double_value(&[]);
    assert!(max <= 2.0 * std / 0.879_625_661 + 1e-6, "{max}");
    let measured = w.std(true).double_value(&[]);
    assert!((measured - std).abs() < 0.1 * std, "std {measured} vs {std}");
    // mxnet fix_gamma keeps BN gamma at 1 and out of the trainable set
    let alex = Net::new(models::zoo::build("age-gender", Some(2), None).unwrap(), Device::Cpu).unwrap();
    assert!(!alex.params["block1.bn.weight"].requires_grad());
    assert_eq!(alex.params["block1.bn.weight"].mean(Kind::Float).double_value(&[]), 1.0);
    assert!(alex.trainable().iter().all(|(s, _)| s.name != "block1.bn.weight"));
}

#[test]
fn elu_alpha_and_prelu_slope_are_applied() {
    use models::builder::GraphBuilder;
    use models::graph::{Init, Op};
    let mut b = GraphBuilder::new("acts", [1, 1, 2], Init::XavierUniform);
    let x = b.input();
    let e = b.then("elu", Op::Elu { alpha: 0.25 }, x);
    let p = b.then("prelu", Op::Prelu { init: 0.5 }, e);
    let net = Net::new(b.finish(p).unwrap(), Device::Cpu).unwrap();
    let x = Tensor::from_slice(&[-2.0f32, 3.0]).view([1, 1, 1, 2]);
    let y = Vec::<f32>::try_from(net.forward(&x, false).flatten(0, -1)).unwrap();
    let expected_neg = 0.5 * 0.25 * ((-2.0f32).exp() - 1.0);
    assert!((y[0] - expected_neg).abs() < 1e-6 && y[1] == 3.0, "{y:?}");
}

#[test]
fn surgery_loads_everything_but_the_new_head() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().to_path_buf();
    tch::manual_seed(1);
    let source = Net::new(models::zoo::build("mini-vgg", Some(10), None).unwrap(), Device::Cpu).unwrap();
    let file = dir.join("pretrained.safetensors");
    source.save(&file).unwrap();
    tch::manual_seed(2);
    let mut target = Net::new(models::zoo::build("mini-vgg", Some(5), None).unwrap(), Device::Cpu).unwrap();
    let fresh_head = target.params["classifier.weight"].copy();
    let err = target.load_except(&file, &[]).unwrap_err().to_string();
    assert!(err.contains("classifier.weight") && err.contains("[10, 512]"), "{err}");
    let n = target.load_except(&file, &["classifier".to_string()]).unwrap();
    assert_eq!(n, target.graph.params().len() - 2);
    for (name, t) in &target.params {
        if name.starts_with("classifier.") {
            if name == "classifier.weight" {
                assert!(t.equal(&fresh_head), "the new head keeps its initialisation");
            }
        } else {
            assert!(t.equal(&source.params[name]), "{name} was not transferred");
        }
    }
}

#[test]
fn one_off_accuracy_counts_predictions_within_one_bin() {
    use data::image::{DynamicImage, GrayImage};
    use data::records::{pack, Item, PackOptions, Source};
    use trainer::batches::{BatchSpec, RecordBatches};
    let net = Net::new(models::zoo::build("mini-vgg", Some(8), None).unwrap(), Device::Cpu).unwrap();
    tch::no_grad(|| {
        for (name, t) in &net.params {
            let v = if name.ends_with("running_var") || (name.ends_with(".weight") && name.contains(".bn")) { 1.0 } else { 0.0 };
            let _ = t.shallow_clone().fill_(v);
        }
        // every prediction is bin 2
        let _ = net.params["classifier.bias"].shallow_clone().narrow(0, 2, 1).fill_(5.0);
    });
    let labels = [2i32, 1, 3, 0, 6, 2];
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let rec = dir.join("bins.rec");
    let items: Vec<Item> = labels
        .iter()
        .enumerate()
        .map(|(i, &label)| Item { source: Source::Image(DynamicImage::ImageLuma8(GrayImage::new(28, 28))), key: format!("{i}"), label, boxes: vec![] })
        .collect();
    pack(&items, &rec, &PackOptions { short_side: 0, jpeg_quality: 0, grayscale: true }, false).unwrap();
    let spec = BatchSpec { input: [1, 28, 28], mean: vec![0.0], std: vec![255.0], train: false, flip: false, shift: 0, rotate: 0.0, shear: 0.0 };
    let m = trainer::train::evaluate(&net, &RecordBatches::open(&rec, 0, &spec, 4, 0, false).unwrap(), true).unwrap();
    assert_eq!(m.rank1, 2.0 / 6.0);
    assert_eq!(m.one_off, Some(4.0 / 6.0), "2, 1, 3 and 2 are within one bin of 2; 0 and 6 are not");
}
