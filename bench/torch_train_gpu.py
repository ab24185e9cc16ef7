"""PyTorch peer for bench/train_gpu_resnet50.sh: torchvision ResNet-50 trained at 224 with bf16 autocast
and channels-last on a CUDA GPU, two epochs, the second measured; prints samples/s.

Written with the idiomatic fast settings: DataLoader(pin_memory=True) and non_blocking copies, the
fused SGD kernel (fused=True), zero_grad(set_to_none=True), the loss summed on the device and read
once an epoch. Two input modes:
  ROOT            the JPEGs, decoded by DataLoader workers (random 224 crop + flip + normalise);
  --synthetic N   one fixed random batch in pinned memory, copied to the GPU every step, N images an
                  epoch (no decoding: the compute path alone).
--compile runs the model through torch.compile (the first epoch pays the compilation)."""
import argparse, json, os, time

import torch
import torchvision

p = argparse.ArgumentParser()
p.add_argument("root", nargs="?")
p.add_argument("--batch", type=int, default=64)
p.add_argument("--workers", type=int, default=8)
p.add_argument("--synthetic", type=int, default=0)
p.add_argument("--classes", type=int, default=8)
p.add_argument("--compile", action="store_true")
a = p.parse_args()

if a.synthetic:
    classes = list(range(a.classes))
    x_host = torch.randint(0, 256, (a.batch, 3, 224, 224)).float().sub_(118.0).div_(57.6).pin_memory()
    y_host = torch.randint(0, a.classes, (a.batch,)).pin_memory()
    steps = max(1, a.synthetic // a.batch)
    loader = [(x_host, y_host)] * steps
else:
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms as T

    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(a.root) for f in fs if f.endswith(".jpg"))
    classes = sorted({os.path.basename(os.path.dirname(f)) for f in files})
    tf = T.Compose([T.RandomCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize([123.68 / 255, 116.78 / 255, 103.94 / 255], [58.4 / 255, 57.1 / 255, 57.4 / 255])])

    class Jpegs(Dataset):
        def __len__(self):
            return len(files)

        def __getitem__(self, i):
            return tf(Image.open(files[i]).convert("RGB")), classes.index(os.path.basename(os.path.dirname(files[i])))

    loader = DataLoader(Jpegs(), batch_size=a.batch, shuffle=True, num_workers=a.workers, pin_memory=True,
                        persistent_workers=True)

model = torchvision.models.resnet50(num_classes=len(classes)).cuda().to(memory_format=torch.channels_last)
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, fused=True)
step_model = torch.compile(model) if a.compile else model
for epoch in range(2):
    torch.cuda.synchronize()
    t0, seen = time.perf_counter(), 0
    loss_sum = torch.zeros((), device="cuda", dtype=torch.float64)
    for x, y in loader:
        x = x.cuda(non_blocking=True).to(memory_format=torch.channels_last)
        y = y.cuda(non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(step_model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += loss.detach().double() * len(y)
        seen += len(y)
    loss_sum.item()
    torch.cuda.synchronize()
    secs = time.perf_counter() - t0
print(json.dumps({"samples_per_sec": seen / secs, "seconds": secs, "compile": a.compile, "synthetic": bool(a.synthetic)}))
