"""PyTorch eager peer for bench/train_step_overhead.sh: the same mini-vgg as `trainer train`, trained
on one fixed synthetic batch (no data loading on either side), so that what is timed is the step itself:
forward, backward, optimizer, metrics. Written the fast idiomatic way: zero_grad(set_to_none=True),
the fused SGD kernel (torch.optim's fused=True, the kernel `trainer` calls too), the loss and the
rank-1/rank-5 hits summed on the device and read once at the end. Two epochs of STEPS steps; the
second is measured. Prints samples/s and ms a step."""
import argparse, json, time

import torch
from torch import nn

from torch_minivgg import mini_vgg

p = argparse.ArgumentParser()
p.add_argument("--batch", type=int, default=8)
p.add_argument("--steps", type=int, default=300)
p.add_argument("--foreach", action="store_true", help="the foreach optimizer instead of fused")
a = p.parse_args()

torch.manual_seed(42)
model = mini_vgg()
kind = {"foreach": True} if a.foreach else {"fused": True}
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4, **kind)
x = (torch.randint(0, 256, (a.batch, 1, 28, 28)).float() - 72.94) / 90.02
y = torch.randint(0, 10, (a.batch,))
model.train()
for epoch in range(2):
    sums = torch.zeros(4, dtype=torch.float64)
    t0 = time.perf_counter()
    for s in range(a.steps):
        opt.zero_grad(set_to_none=True)
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        loss.backward()
        opt.step()
        hit = logits.detach().topk(5, 1).indices.eq(y.unsqueeze(1))
        sums += torch.stack([loss.detach().double() * a.batch, hit[:, 0].sum().double(), hit.sum().double(),
                             torch.tensor(float(a.batch), dtype=torch.float64)])
    sums.tolist()
    secs = time.perf_counter() - t0
seen = a.steps * a.batch
print(json.dumps({"samples_per_sec": seen / secs, "ms_per_step": secs * 1e3 / a.steps, "threads": torch.get_num_threads()}))
