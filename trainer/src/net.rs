//! The graph interpreter on libtorch: parameters under the graph's dotted names, initialised by the
//! model's scheme, and a forward pass in train or eval mode.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use models::graph::{Conv2d, GraphError, Init, Network, NodeId, Op, ParamInit, ParamSpec};
use tch::{Device, Kind, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error("{path}: {reason}")]
    Weights { path: String, reason: String },
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Numeric precision of convolutions and linear layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    #[default]
    Fp32,
    /// Mixed precision: conv and linear layers compute in bfloat16 (weights stay fp32 masters);
    /// normalisation, activations, the loss and the optimizer stay in fp32.
    Bf16,
    /// As `bf16` with float16 (CUDA); no loss scaling, so prefer bf16 where the GPU has it.
    Fp16,
}

impl Precision {
    fn kind(self) -> Option<Kind> {
        match self {
            Precision::Fp32 => None,
            Precision::Bf16 => Some(Kind::BFloat16),
            Precision::Fp16 => Some(Kind::Half),
        }
    }
}

/// A graph with its parameters on one device.
pub struct Net {
    /// The network; its parameter specs are `graph.params()`.
    pub graph: Network,
    /// Every parameter and buffer, by its graph name.
    pub params: BTreeMap<String, Tensor>,
    pub device: Device,
    pub precision: Precision,
    /// Feature maps and conv weights in NHWC memory order (same shapes, other strides).
    pub channels_last: bool,
    /// SyncBatchNorm: in training, every BatchNorm layer normalises with the statistics of the
    /// whole job's batch, summed over the ranks through this link (None: this process's batch).
    pub sync_bn: Option<Arc<crate::dist::BnSync>>,
}

/// The same tensor with channels-last strides: `[N, C, H, W]` stored as N, H, W, C.
pub fn to_channels_last(t: &Tensor) -> Tensor {
    if t.dim() == 4 {
        t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
    } else {
        t.shallow_clone()
    }
}

fn dims(s: &[usize]) -> Vec<i64> {
    s.iter().map(|&d| d as i64).collect()
}

/// Draws the initial value of one parameter (under `no_grad`): weights by the graph's `scheme`, the
/// rest as their spec says.
fn initial_value(spec: &ParamSpec, scheme: Init, device: Device) -> Tensor {
    let shape = dims(&spec.shape);
    let opts = (Kind::Float, device);
    match spec.init {
        ParamInit::Scheme => {
            let (fi, fo) = (spec.fan_in as f64, spec.fan_out as f64);
            match scheme {
                Init::XavierUniform => {
                    let a = (6.0 / (fi + fo)).sqrt();
                    Tensor::empty(&shape, opts).uniform_(-a, a)
                }
                Init::MsraPrelu { slope } => {
                    let std = (2.0 / ((1.0 + slope * slope) * (fi + fo) / 2.0)).sqrt();
                    Tensor::empty(&shape, opts).normal_(0.0, std)
                }
                Init::HeNormal => {
                    // Keras he_normal: a normal truncated at two standard deviations, whose std is
                    // sqrt(2 / fan_in) after truncation (hence the 0.8796 correction).
                    let std = (2.0 / fi).sqrt() / 0.879_625_661_034_239_8;
                    let mut t = Tensor::empty(&shape, opts).normal_(0.0, std);
                    // redraw the values beyond 2 std until none remain
                    loop {
                        let outside = t.abs().gt(2.0 * std);
                        if outside.sum(Kind::Int64).int64_value(&[]) == 0 {
                            break t;
                        }
                        let fresh = Tensor::empty(&shape, opts).normal_(0.0, std);
                        t = t.where_self(&outside.logical_not(), &fresh);
                    }
                }
            }
        }
        ParamInit::Zeros => Tensor::zeros(&shape, opts),
        ParamInit::Ones => Tensor::ones(&shape, opts),
        ParamInit::Const(v) => Tensor::full(&shape, v, opts),
    }
}

/// ELU with any alpha (libtorch's `elu` here takes none): x for x > 0, alpha (e^x - 1) otherwise.
fn elu(x: &Tensor, alpha: f64) -> Tensor {
    x.relu() + (x.clamp_max(0.0).exp() - 1.0) * alpha
}

/// A BatchNorm layer's running statistics and the weight of each new batch in them.
struct Stats<'a> {
    running_mean: &'a Tensor,
    running_var: &'a Tensor,
    momentum: f64,
}

/// BatchNorm in training over the whole job's batch, as PyTorch's `SyncBatchNorm`: each rank's
/// per-channel sums of x and x² and its count are summed over the ranks in one differentiable
/// all-reduce (in float64, so that E[x²] − E[x]² keeps its digits), giving the global mean and
/// biased variance to normalise with; the running statistics take the global mean and unbiased
/// variance with the layer's momentum, so they stay identical on every rank.
fn sync_batch_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, stats: &Stats, eps: f64, sync: &crate::dist::BnSync) -> Tensor {
    let c = x.size()[1];
    let dims: Vec<i64> = (0..x.dim() as i64).filter(|&d| d != 1).collect();
    let count = (x.numel() as i64 / c.max(1)) as f64;
    let local = Tensor::cat(
        &[
            x.sum_dim_intlist(&dims[..], false, Kind::Float).to_kind(Kind::Double),
            x.square().sum_dim_intlist(&dims[..], false, Kind::Float).to_kind(Kind::Double),
            Tensor::full([1], count, (Kind::Double, x.device())),
        ],
        0,
    );
    let total = sync.sum(&local);
    let n = total.narrow(0, 2 * c, 1);
    let mean = total.narrow(0, 0, c) / &n;
    let var = (total.narrow(0, c, c) / &n - mean.square()).clamp_min(0.0);
    tch::no_grad(|| {
        let m = stats.momentum;
        let unbiased = &var * &n / (&n - 1.0).clamp_min(1.0);
        let mut rm = stats.running_mean.shallow_clone();
        let mut rv = stats.running_var.shallow_clone();
        rm.copy_(&(stats.running_mean * (1.0 - m) + mean.to_kind(Kind::Float) * m));
        rv.copy_(&(stats.running_var * (1.0 - m) + unbiased.to_kind(Kind::Float) * m));
    });
    let scale = (var + eps).rsqrt().to_kind(Kind::Float) * weight;
    let shift = bias - mean.to_kind(Kind::Float) * &scale;
    let mut shape = vec![1i64; x.dim()];
    shape[1] = c;
    x * scale.view(&shape[..]) + shift.view(&shape[..])
}

/// Local response normalisation across channels, as torch.nn.LocalResponseNorm computes it:
/// x / (k + alpha / size * sum over the `size` neighbouring channels of x²)^beta.
fn lrn(x: &Tensor, size: usize, alpha: f64, beta: f64, k: f64) -> Tensor {
    let sq = x.square().unsqueeze(1); // [N, 1, C, H, W]
    let pad = [0, 0, 0, 0, (size / 2) as i64, ((size - 1) / 2) as i64];
    let sq = sq.constant_pad_nd(pad);
    let avg = sq.avg_pool3d([size as i64, 1, 1], [1, 1, 1], [0, 0, 0], false, true, None).squeeze_dim(1);
    x / (avg * alpha + k).pow_tensor_scalar(beta)
}

/// RoIAlign as torchvision's `roi_align` computes it (and ONNX Runtime's `RoiAlign`, avg mode):
/// region r of `rois` `[R, 5]` (image index, `x0, y0, x1, y1` in input pixels) is scaled by
/// `spatial_scale` (less half a pixel when `aligned`; otherwise at least one pixel wide and high) onto
/// image r's `[C, H, W]` map in `features` `[N, C, H, W]` and cut into `output` cells, each the mean
/// of `sampling_ratio`² bilinear samples (a sample beyond one pixel outside the map counts as 0, one
/// at the last row or column reads it): `[R, C, oh, ow]`.
///
/// Bilinear sampling is separable, so each region's output is `Ay · F · Axᵀ` with per-region weight
/// matrices `Ay` `[oh, H]` and `Ax` `[ow, W]` (each row the mean of its samples' two-tap weights):
/// two batched matrix products, differentiable in `features`.
pub fn roi_align(features: &Tensor, rois: &Tensor, output: [usize; 2], spatial_scale: f64, sampling_ratio: usize, aligned: bool) -> Tensor {
    let [_, c, h, w] = features.size()[..] else { panic!("RoiAlign reads an [N, C, H, W] map, not {:?}", features.size()) };
    let device = features.device();
    let rois = rois.to_kind(Kind::Float);
    let r = rois.size()[0];
    let offset = if aligned { 0.5 } else { 0.0 };
    let g = sampling_ratio as i64;
    let f = (Kind::Float, device);
    // the weights of one axis: [R, bins, size]
    let axis = |lo: Tensor, hi: Tensor, bins: i64, size: i64| -> Tensor {
        let lo = lo * spatial_scale - offset;
        let hi = hi * spatial_scale - offset;
        let len = if aligned { &hi - &lo } else { (&hi - &lo).clamp_min(1.0) };
        let bin = (len / bins as f64).view([-1, 1, 1]);
        let p = Tensor::arange(bins, f).view([1, bins, 1]);
        let i = (Tensor::arange(g, f) + 0.5).view([1, 1, g]);
        let pos = lo.view([-1, 1, 1]) + &p * &bin + &i * &bin / g as f64; // [R, bins, g]
        let valid = pos.ge(-1.0).logical_and(&pos.le(size as f64)).to_kind(Kind::Float);
        let pos = pos.clamp_min(0.0);
        let last = (size - 1) as f64;
        let low = pos.floor();
        let pos = pos.where_self(&low.lt(last), &low.full_like(last));
        let low = low.clamp_max(last);
        let high = (&low + 1.0).clamp_max(last);
        let frac = &pos - &low;
        let grid = Tensor::arange(size, f).view([1, 1, 1, size]);
        let tap = |at: &Tensor, weight: Tensor| at.unsqueeze(-1).eq_tensor(&grid).to_kind(Kind::Float) * weight.unsqueeze(-1);
        let weights = (tap(&low, 1.0 - &frac) + tap(&high, frac)) * valid.unsqueeze(-1);
        weights.sum_dim_intlist(&[2i64][..], false, Kind::Float) / g as f64
    };
    let col = |k: i64| rois.select(1, k);
    let [oh, ow] = output.map(|v| v as i64);
    let ay = axis(col(2), col(4), oh, h).to_kind(features.kind()); // [R, oh, H]
    let ax = axis(col(1), col(3), ow, w).to_kind(features.kind()); // [R, ow, W]
    let maps = features.index_select(0, &col(0).to_kind(Kind::Int64)); // [R, C, H, W]
    let t = ay.bmm(&maps.permute([0, 2, 1, 3]).reshape([r, h, c * w])); // [R, oh, C·W]
    let t = t.reshape([r, oh * c, w]).bmm(&ax.transpose(1, 2)); // [R, oh·C, ow]
    t.view([r, oh, c, ow]).permute([0, 2, 1, 3]).contiguous()
}

impl Net {
    /// Creates every parameter of `graph` on `device`, initialised by the graph's scheme from the
    /// current libtorch seed.
    pub fn new(graph: Network, device: Device) -> Result<Self, NetError> {
        let mut params = BTreeMap::new();
        let _guard = tch::no_grad_guard();
        for spec in graph.params() {
            let t = initial_value(spec, graph.init, device);
            params.insert(spec.name.clone(), if spec.trainable { t.set_requires_grad(true) } else { t });
        }
        Ok(Self { graph, params, device, precision: Precision::Fp32, channels_last: false, sync_bn: None })
    }

    /// Switches precision and memory format (conv weights are re-laid out once, here).
    pub fn set_compute(&mut self, precision: Precision, channels_last: bool) {
        self.precision = precision;
        if channels_last != self.channels_last {
            let _guard = tch::no_grad_guard();
            for (name, t) in self.params.iter_mut() {
                if t.dim() == 4 {
                    let re = if channels_last { to_channels_last(t) } else { t.contiguous() };
                    *t = re.detach().set_requires_grad(t.requires_grad());
                    let _ = name;
                }
            }
            self.channels_last = channels_last;
        }
    }

    /// Conv/linear operands in the compute precision.
    fn low(&self, t: &Tensor) -> Tensor {
        match self.precision.kind() {
            Some(k) => t.to_kind(k),
            None => t.shallow_clone(),
        }
    }

    fn high(&self, t: Tensor) -> Tensor {
        match self.precision.kind() {
            Some(_) => t.to_kind(Kind::Float),
            None => t,
        }
    }

    /// The trainable parameters with their specs, in graph order.
    pub fn trainable(&self) -> Vec<(&ParamSpec, &Tensor)> {
        self.graph.params().iter().filter(|s| s.trainable).map(|s| (s, &self.params[&s.name])).collect()
    }

    fn p(&self, name: &str) -> &Tensor {
        &self.params[name]
    }

    /// Runs the graph on a batch `[N, C, H, W]` and returns the output node's value (the logits).
    /// `train` switches dropout on and makes BatchNorm use and update batch statistics.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        self.forward_to(x, train, self.graph.output)
    }

    /// Runs the graph up to node `target` (nodes are in topological order, so nothing after it is
    /// computed) and returns that node's value: `trainer features` reads a frozen network's last
    /// pooling layer this way.
    pub fn forward_to(&self, x: &Tensor, train: bool, target: NodeId) -> Tensor {
        self.forward_nodes(x, train, &[target]).pop().expect("one target")
    }

    /// The values of every output ([`Graph::output_nodes`](models::graph::Graph::output_nodes):
    /// `output` first, then the named ones, e.g. a detector's class scores and box codes).
    pub fn forward_outputs(&self, x: &Tensor, train: bool) -> Vec<Tensor> {
        self.forward_nodes(x, train, &self.graph.output_nodes())
    }

    /// Runs the graph up to the last of `targets` and returns their values, in the order given. In a
    /// two-stage detector the targets are per-image nodes, before its RoiAlign ([`Net::forward_rois`]
    /// runs the rest).
    pub fn forward_nodes(&self, x: &Tensor, train: bool, targets: &[NodeId]) -> Vec<Tensor> {
        if let Some(r) = self.graph.roi_node() {
            assert!(targets.iter().all(|&t| t < r), "per-image targets end before the RoiAlign '{}' (the rest is forward_rois)", self.graph.nodes[r].name);
        }
        self.run(x, None, 0, train, targets)
    }

    /// A two-stage detector's second stage: its RoiAlign on `rois` `[R, 5]` (image index, then
    /// `x0, y0, x1, y1` in input pixels) of `features`, the per-image map it reads, and the nodes after
    /// it; returns the values of `targets` (per region, `[R, …]`).
    pub fn forward_rois(&self, features: &Tensor, rois: &Tensor, train: bool, targets: &[NodeId]) -> Vec<Tensor> {
        let r = self.graph.roi_node().expect("forward_rois runs a graph with a RoiAlign");
        assert!(targets.iter().all(|&t| t >= r), "per-region targets come after the RoiAlign");
        self.run(features, Some(rois), r, train, targets)
    }

    /// Runs nodes `start..` up to the last of `targets`: from the input `x` at 0, or from a RoiAlign
    /// at `start` whose input map is `x` and whose regions are `rois`.
    fn run(&self, x: &Tensor, rois: Option<&Tensor>, start: usize, train: bool, targets: &[NodeId]) -> Vec<Tensor> {
        let g = &self.graph;
        let last = targets.iter().copied().max().expect("at least one target");
        let nodes = &g.nodes[..=last];
        let mut values: Vec<Option<Tensor>> = (0..nodes.len()).map(|_| None).collect();
        if start > 0 {
            values[nodes[start].inputs[0]] = Some(x.shallow_clone());
        }
        // free each value after its last reader, to keep activation memory to what autograd needs
        let mut last_use = vec![0usize; nodes.len()];
        for (i, n) in nodes.iter().enumerate() {
            for &j in &n.inputs {
                last_use[j] = i;
            }
        }
        for &t in targets {
            last_use[t] = usize::MAX;
        }
        for (i, node) in nodes.iter().enumerate().skip(start) {
            let input = |k: usize| values[node.inputs[k]].as_ref().expect("value freed before its last use");
            let name = |suffix: &str| format!("{}.{suffix}", node.name);
            let out = match &node.op {
                Op::Input { .. } => {
                    if self.channels_last {
                        to_channels_last(x)
                    } else {
                        x.shallow_clone()
                    }
                }
                Op::Conv2d(Conv2d { stride, padding, dilation, groups, bias, .. }) => self.high(self.low(input(0)).conv2d(
                    &self.low(self.p(&name("weight"))),
                    if *bias { Some(self.low(self.p(&name("bias")))) } else { None },
                    dims(stride),
                    dims(padding),
                    dims(dilation),
                    *groups as i64,
                )),
                Op::BatchNorm { eps, momentum, .. } if train && self.sync_bn.is_some() => {
                    let stats = Stats { running_mean: self.p(&name("running_mean")), running_var: self.p(&name("running_var")), momentum: *momentum };
                    let sync = self.sync_bn.as_ref().expect("matched");
                    sync_batch_norm(input(0), self.p(&name("weight")), self.p(&name("bias")), &stats, *eps, sync)
                }
                Op::BatchNorm { eps, momentum, .. } => Tensor::batch_norm(
                    input(0),
                    Some(self.p(&name("weight"))),
                    Some(self.p(&name("bias"))),
                    Some(self.p(&name("running_mean"))),
                    Some(self.p(&name("running_var"))),
                    train,
                    *momentum,
                    *eps,
                    true,
                ),
                Op::Relu => input(0).relu(),
                Op::Elu { alpha } => elu(input(0), *alpha),
                Op::Prelu { .. } => input(0).prelu(self.p(&name("weight"))),
                Op::L2Norm { .. } => {
                    let x = input(0);
                    let norm = x.norm_scalaropt_dim(2.0, [1i64].as_slice(), true).clamp_min(1e-12);
                    let w = self.p(&name("weight"));
                    x / norm * w.view([1, -1, 1, 1])
                }
                Op::LeakyRelu { slope } => {
                    let x = input(0);
                    x.clamp_min(0.0) + x.clamp_max(0.0) * *slope
                }
                Op::Lrn { size, alpha, beta, k } => lrn(input(0), *size, *alpha, *beta, *k),
                Op::MaxPool { kernel, stride, padding, ceil_mode } => input(0).max_pool2d(dims(kernel), dims(stride), dims(padding), [1, 1], *ceil_mode),
                Op::AvgPool { kernel, stride, padding, ceil_mode } => input(0).avg_pool2d(dims(kernel), dims(stride), dims(padding), *ceil_mode, false, None),
                Op::GlobalAvgPool => input(0).adaptive_avg_pool2d([1, 1]),
                Op::Linear { bias, .. } => {
                    self.high(self.low(input(0)).linear(&self.low(self.p(&name("weight"))), if *bias { Some(self.low(self.p(&name("bias")))) } else { None }))
                }
                Op::Dropout { p } => input(0).dropout(*p, train),
                Op::Flatten => input(0).flatten(1, -1),
                Op::Concat => {
                    let parts: Vec<&Tensor> = (0..node.inputs.len()).map(input).collect();
                    Tensor::cat(&parts, 1)
                }
                Op::Add => (1..node.inputs.len()).fold(input(0).shallow_clone(), |acc, k| acc + input(k)),
                Op::Softmax => input(0).softmax(-1, Kind::Float),
                Op::Clip { min, max } => input(0).clamp(*min, *max),
                Op::AnchorRows { columns } => {
                    let x = input(0);
                    x.permute([0, 2, 3, 1]).reshape([x.size()[0], -1, *columns as i64])
                }
                Op::ConcatRows => {
                    let parts: Vec<&Tensor> = (0..node.inputs.len()).map(input).collect();
                    Tensor::cat(&parts, 1)
                }
                Op::RoiAlign { output, spatial_scale, sampling_ratio, aligned } => {
                    let rois = rois.expect("a RoiAlign runs through forward_rois");
                    roi_align(input(0), rois, *output, *spatial_scale, *sampling_ratio, *aligned)
                }
            };
            values[i] = Some(out);
            for &j in &node.inputs {
                if last_use[j] == i {
                    values[j] = None;
                }
            }
        }
        targets.iter().map(|&t| values[t].as_ref().expect("output value").shallow_clone()).collect()
    }

    /// Overwrites parameter `name` with `values` (tests and tools; the shape is kept).
    pub fn set_param(&mut self, name: &str, values: &[f32]) {
        let p = self.params.get_mut(name).unwrap_or_else(|| panic!("no parameter {name}"));
        let v = Tensor::from_slice(values).view(p.size().as_slice()).to_device(p.device()).to_kind(p.kind());
        tch::no_grad(|| p.copy_(&v));
    }

    /// A network on the CPU, initialised from libtorch's generator seeded with `seed`.
    pub fn new_cpu(graph: Network, seed: i64) -> Result<Self, NetError> {
        tch::manual_seed(seed);
        Self::new(graph, Device::Cpu)
    }

    /// Runs a float32 batch in train mode without a backward pass, which updates the BatchNorm running
    /// statistics (recalibrating them on new data, or giving parity checks non-trivial statistics).
    pub fn update_bn_statistics(&self, data: &[f32], shape: [usize; 4]) {
        let x = Tensor::from_slice(data).view([shape[0] as i64, shape[1] as i64, shape[2] as i64, shape[3] as i64]).to_device(self.device);
        let _ = tch::no_grad(|| self.forward(&x, true));
    }

    /// Class probabilities for a float32 batch in eval mode (for parity checks against exported files).
    pub fn predict_f32(&self, data: &[f32], shape: [usize; 4]) -> Vec<f32> {
        let x = Tensor::from_slice(data).view([shape[0] as i64, shape[1] as i64, shape[2] as i64, shape[3] as i64]).to_device(self.device);
        let p = tch::no_grad(|| self.forward(&x, false).softmax(-1, Kind::Float));
        Vec::<f32>::try_from(p.flatten(0, -1).to_device(Device::Cpu)).expect("float probabilities")
    }

    /// Writes every parameter and buffer to a safetensors file under its graph name (in the standard
    /// layout: channels-last tensors are not contiguous, and safetensors stores only contiguous ones).
    pub fn save(&self, path: &Path) -> Result<(), NetError> {
        let owned: Vec<(&str, Tensor)> = self.params.iter().map(|(k, v)| (k.as_str(), v.contiguous())).collect();
        let named: Vec<(&str, &Tensor)> = owned.iter().map(|(k, v)| (*k, v)).collect();
        Tensor::write_safetensors(&named, path)?;
        Ok(())
    }

    /// Network surgery (book ch. 12): loads every parameter from `path` except those under the
    /// `skip` prefixes (e.g. `classifier`), which keep their fresh initialisation. Every other parameter
    /// must be in the file with its exact shape. Returns how many tensors were loaded.
    pub fn load_except(&mut self, path: &Path, skip: &[String]) -> Result<usize, NetError> {
        let err = |reason: String| NetError::Weights { path: path.display().to_string(), reason };
        let loaded: BTreeMap<String, Tensor> = Tensor::read_safetensors(path).map_err(|e| err(e.to_string()))?.into_iter().collect();
        let _guard = tch::no_grad_guard();
        let mut n = 0;
        for spec in self.graph.params() {
            if skip.iter().any(|s| spec.name == *s || spec.name.starts_with(&format!("{s}."))) {
                continue;
            }
            let t = loaded.get(&spec.name).ok_or_else(|| err(format!("missing parameter '{}' (skip it with init_skip)", spec.name)))?;
            if t.size() != dims(&spec.shape) {
                return Err(err(format!("parameter '{}' has shape {:?}, the graph expects {:?}", spec.name, t.size(), spec.shape)));
            }
            self.params[&spec.name].shallow_clone().copy_(t);
            n += 1;
        }
        Ok(n)
    }

    /// Loads weights saved by [`save`](Self::save) (or converted from elsewhere under the same names);
    /// every parameter of the graph must be present with its exact shape.
    pub fn load(&mut self, path: &Path) -> Result<(), NetError> {
        let err = |reason: String| NetError::Weights { path: path.display().to_string(), reason };
        let loaded: BTreeMap<String, Tensor> = Tensor::read_safetensors(path).map_err(|e| err(e.to_string()))?.into_iter().collect();
        let _guard = tch::no_grad_guard();
        for spec in self.graph.params() {
            let t = loaded.get(&spec.name).ok_or_else(|| err(format!("missing parameter '{}'", spec.name)))?;
            if t.size() != dims(&spec.shape) {
                return Err(err(format!("parameter '{}' has shape {:?}, the graph expects {:?}", spec.name, t.size(), spec.shape)));
            }
            self.params[&spec.name].shallow_clone().copy_(t);
        }
        Ok(())
    }
}
