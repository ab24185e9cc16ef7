//! SqueezeNet as the book trains it on ImageNet (Ch. 9, `MxSqueezeNet`; Iandola et al. 2016, v1.0).
//!
//! conv 7x7/2 (96) -> max pool 3x3/2 -> fire2..4 -> max pool -> fire5..8 -> max pool -> fire9 ->
//! dropout 0.5 -> conv 1x1 (classes) -> average pool 13x13 -> flatten. A fire module is a 1x1 squeeze
//! then 1x1 and 3x3 expands of equal width concatenated [1x1, 3x3]. Every convolution, the classifier
//! included, is followed by the activation: ELU in the final experiment (`squeezenet`, mxnet's alpha
//! 0.25), ReLU in Exp. 1/2 (`squeezenet-relu`). No BatchNorm (Exp. 3 added it and failed).
//! The book's text says fire4 expands to 64 (Appendix A.7); its code, followed here, uses 128.
//! Initialiser: Xavier. With 1000 classes: 1,248,424 parameters.

use super::ModelOptions;
use crate::builder::{avg_pool, conv, max_pool, GraphBuilder};
use crate::graph::{GraphError, Init, Network, NodeId, Op};

fn fire(b: &mut GraphBuilder, x: NodeId, scope: &str, squeeze: usize, expand: usize, act: &Op) -> NodeId {
    let mut b = b.scope(scope);
    let s = b.then("squeeze", conv(squeeze, 1), x);
    let s = b.then("squeeze_act", act.clone(), s);
    let e1 = b.then("expand1x1", conv(expand, 1), s);
    let e1 = b.then("expand1x1_act", act.clone(), e1);
    let e3 = b.then("expand3x3", conv(expand, 3).pad(1), s);
    let e3 = b.then("expand3x3_act", act.clone(), e3);
    b.add_op("concat", Op::Concat, &[e1, e3])
}

pub(crate) fn build(o: &ModelOptions, name: &str, act: Op) -> Result<Network, GraphError> {
    let mut b = GraphBuilder::new(name, [o.in_channels, 227, 227], Init::XavierUniform);
    let x = b.input();
    let x = b.then("conv1", conv(96, 7).stride(2), x); // [96, 111, 111]
    let x = b.then("act1", act.clone(), x);
    let mut x = b.then("pool1", max_pool(3, 2, 0), x); // [96, 55, 55]
    let fires: [(&str, usize, usize); 8] = [
        ("fire2", 16, 64),  // [128, 55, 55]
        ("fire3", 16, 64),  // [128, 55, 55]
        ("fire4", 32, 128), // [256, 55, 55] -> pool4 [256, 27, 27]
        ("fire5", 32, 128), // [256, 27, 27]
        ("fire6", 48, 192), // [384, 27, 27]
        ("fire7", 48, 192), // [384, 27, 27]
        ("fire8", 64, 256), // [512, 27, 27] -> pool8 [512, 13, 13]
        ("fire9", 64, 256), // [512, 13, 13]
    ];
    for (scope, s, e) in fires {
        x = fire(&mut b, x, scope, s, e, &act);
        if scope == "fire4" || scope == "fire8" {
            x = b.then(&format!("pool{}", &scope[4..]), max_pool(3, 2, 0), x);
        }
    }
    let x = b.dropout("drop9", x, 0.5);
    let x = b.then("classifier", conv(o.num_classes, 1), x); // [classes, 13, 13]
    let x = b.then("act10", act, x);
    let x = b.then("avgpool", avg_pool(13, 1), x); // [classes, 1, 1]
    let logits = b.flatten("flatten", x);
    b.finish(logits)
}
