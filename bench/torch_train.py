"""PyTorch baseline for bench/train_throughput.sh: trains the same mini-vgg on the same Fashion-MNIST
slice with the same batch size, optimizer, normalisation and flip augmentation as
`trainer train`, on the same libtorch (torch 2.11.0), and prints the training samples/s.
Python is only the baseline here; the product is the Rust trainer."""
import argparse, gzip, json, time

import numpy as np
import torch
from torch import nn

from torch_minivgg import mini_vgg

p = argparse.ArgumentParser()
p.add_argument("--data", default="/usr/share/datasets/fashion-mnist/train")
p.add_argument("--limit", type=int, default=12800)
p.add_argument("--batch", type=int, default=128)
p.add_argument("--epochs", type=int, default=1)
a = p.parse_args()


def idx(path):
    b = gzip.open(path).read()
    rank = b[3]
    dims = [int.from_bytes(b[4 + 4 * i:8 + 4 * i], "big") for i in range(rank)]
    return np.frombuffer(b, np.uint8, offset=4 + 4 * rank).reshape(dims)


x_all = torch.from_numpy(idx(a.data + "-images-idx3-ubyte.gz")[: a.limit].copy()).unsqueeze(1)
y_all = torch.from_numpy(idx(a.data + "-labels-idx1-ubyte.gz")[: a.limit].astype(np.int64))


torch.manual_seed(42)
model = mini_vgg()
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
model.train()
n = len(y_all)
for epoch in range(a.epochs):
    t0 = time.perf_counter()
    perm = torch.randperm(n)
    seen = 0
    for s in range(0, n, a.batch):
        idx_b = perm[s:s + a.batch]
        x = (x_all[idx_b].float() - 72.94) / 90.02
        flip = torch.rand(len(idx_b), 1, 1, 1) < 0.5
        x = torch.where(flip, x.flip(3), x)
        y = y_all[idx_b]
        opt.zero_grad()
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        loss.backward()
        opt.step()
        loss.item()
        logits.detach().topk(5, 1)
        seen += len(idx_b)
    secs = time.perf_counter() - t0
print(json.dumps({"samples_per_sec": seen / secs, "seconds": secs, "samples": seen, "threads": torch.get_num_threads()}))
