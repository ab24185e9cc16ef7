"""PyTorch baseline for bench/loader_throughput.sh: a torch DataLoader with torchvision transforms that
decodes the same JPEGs and applies the same augmentation as `trainer loader-bench` (random 224 crop,
flip, rotation within 15 degrees, shear 0.1, normalisation), with the same batch size and worker
count. Prints images/s. Python is only the baseline here."""
import argparse, json, math, os, time

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

p = argparse.ArgumentParser()
p.add_argument("root")
p.add_argument("--size", type=int, default=224)
p.add_argument("--batch", type=int, default=64)
p.add_argument("--workers", type=int, default=2)
a = p.parse_args()

files = sorted(os.path.join(d, f) for d, _, fs in os.walk(a.root) for f in fs if f.endswith(".jpg"))
tf = T.Compose([
    T.RandomCrop(a.size),
    T.RandomHorizontalFlip(),
    T.RandomAffine(degrees=15, shear=math.degrees(math.atan(0.1)), interpolation=T.InterpolationMode.BILINEAR),
    T.ToTensor(),
    T.Normalize([123.68 / 255, 116.78 / 255, 103.94 / 255], [58.4 / 255, 57.1 / 255, 57.4 / 255]),
])


class Jpegs(Dataset):
    def __len__(self):
        return len(files)

    def __getitem__(self, i):
        return tf(Image.open(files[i]).convert("RGB")), 0


torch.set_num_threads(1)
loader = DataLoader(Jpegs(), batch_size=a.batch, shuffle=True, num_workers=a.workers, prefetch_factor=4 if a.workers else None)
t0 = time.perf_counter()
n = sum(x.shape[0] for x, _ in loader)
secs = time.perf_counter() - t0
print(json.dumps({"images": n, "seconds": secs, "images_per_sec": n / secs, "workers": a.workers}))
