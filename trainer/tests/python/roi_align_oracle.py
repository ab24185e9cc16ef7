"""torchvision.ops.roi_align on the cases on stdin (JSON), answers on stdout.

Each case: a feature map [N, C, H, W], regions [R, 5] (image index, x0, y0, x1, y1), the output grid,
spatial scale, sampling ratio and aligned flag, and an upstream gradient [R, C, oh, ow]. The answer:
the pooled values and the gradient they send to the feature map.
"""
import json
import sys

import torch
from torchvision.ops import roi_align


def answer(case):
    x = torch.tensor(case["features"], dtype=torch.float32).reshape(case["shape"]).requires_grad_(True)
    rois = torch.tensor(case["rois"], dtype=torch.float32).reshape(-1, 5)
    y = roi_align(x, rois, tuple(case["output"]), case["spatial_scale"], case["sampling_ratio"], case["aligned"])
    up = torch.tensor(case["upstream"], dtype=torch.float32).reshape(y.shape)
    (y * up).sum().backward()
    return {"values": y.detach().flatten().tolist(), "grad": x.grad.flatten().tolist()}


print(json.dumps([answer(c) for c in json.load(sys.stdin)]))
