"""PyTorch baseline for bench/train_gpu_resnet50.sh: torchvision ResNet-50 trained at 224 with bf16
autocast and channels-last on a CUDA GPU, from the same JPEGs, batch and augmentation; two epochs, the
second measured. Prints samples/s."""
import argparse, json, os, time

import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

p = argparse.ArgumentParser()
p.add_argument("root")
p.add_argument("--batch", type=int, default=64)
p.add_argument("--workers", type=int, default=8)
a = p.parse_args()
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(a.root) for f in fs if f.endswith(".jpg"))
classes = sorted({os.path.basename(os.path.dirname(f)) for f in files})
tf = T.Compose([T.RandomCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
                T.Normalize([123.68 / 255, 116.78 / 255, 103.94 / 255], [58.4 / 255, 57.1 / 255, 57.4 / 255])])


class Jpegs(Dataset):
    def __len__(self):
        return len(files)

    def __getitem__(self, i):
        return tf(Image.open(files[i]).convert("RGB")), classes.index(os.path.basename(os.path.dirname(files[i])))


model = torchvision.models.resnet50(num_classes=len(classes)).cuda().to(memory_format=torch.channels_last)
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
loader = DataLoader(Jpegs(), batch_size=a.batch, shuffle=True, num_workers=a.workers, pin_memory=True)
for epoch in range(2):
    torch.cuda.synchronize()
    t0, seen = time.perf_counter(), 0
    for x, y in loader:
        x = x.cuda(non_blocking=True).to(memory_format=torch.channels_last)
        y = y.cuda(non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()
        seen += len(y)
    torch.cuda.synchronize()
    secs = time.perf_counter() - t0
print(json.dumps({"samples_per_sec": seen / secs, "seconds": secs}))
