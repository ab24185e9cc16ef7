"""NVIDIA DALI peer for bench/loader_throughput.sh: DALI's CPU pipeline (device_id=None, no GPU) decoding
the same JPEGs into the same batches as `trainer loader-bench`: a random 224 crop, a random flip and
the normalisation (`crop_mirror_normalize`, DALI's fused crop + mirror + normalise), and in the "book" mode
also a rotation within 15 degrees and a shear within 0.1 about the crop's centre (`warp_affine`,
bilinear), as the loader does after its crop. Same batch size and threads; one warm-up batch, then an
epoch's worth of batches timed. Prints images/s.

    python bench/dali_loader.py JPEG_ROOT --mode crop-flip|book [--roi] --batch 64 --threads 2
"""
import argparse, json, os, time

from nvidia.dali import fn, pipeline_def, types

p = argparse.ArgumentParser()
p.add_argument("root")
p.add_argument("--mode", choices=["crop-flip", "book"], default="book")
p.add_argument("--size", type=int, default=224)
p.add_argument("--batch", type=int, default=64)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--roi", action="store_true",
               help="crop-flip: decode only the crop window (fn.decoders.image_crop, libjpeg-turbo's region decoding)")
a = p.parse_args()
files = sum(len([f for f in fs if f.endswith(".jpg")]) for _, _, fs in os.walk(a.root))
S = a.size


@pipeline_def(batch_size=a.batch, num_threads=a.threads, device_id=None, seed=0)
def pipe():
    jpegs, labels = fn.readers.file(file_root=a.root, random_shuffle=True, name="reader")
    x, y = fn.random.uniform(range=(0.0, 1.0)), fn.random.uniform(range=(0.0, 1.0))
    if a.roi and a.mode == "crop-flip":
        # the crop is decoded instead of cut from the whole image; crop_mirror_normalize then flips it
        images = fn.decoders.image_crop(jpegs, device="cpu", output_type=types.RGB, crop=(S, S), crop_pos_x=x, crop_pos_y=y)
        out = fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="CHW", mirror=fn.random.coin_flip(),
                                       mean=[123.68, 116.78, 103.94], std=[58.4, 57.1, 57.4])
        return out, labels
    images = fn.decoders.image(jpegs, device="cpu", output_type=types.RGB)
    if a.mode == "book":
        images = fn.crop(images, crop=(S, S), crop_pos_x=x, crop_pos_y=y)
        m = fn.transforms.rotation(angle=fn.random.uniform(range=(-15.0, 15.0)), center=[S / 2, S / 2])
        m = fn.transforms.shear(m, shear=fn.random.uniform(range=(-0.1, 0.1), shape=[2]), center=[S / 2, S / 2])
        images = fn.warp_affine(images, matrix=m, interp_type=types.INTERP_LINEAR, fill_value=0, inverse_map=False)
        crop = {}
    else:
        crop = {"crop": (S, S), "crop_pos_x": x, "crop_pos_y": y}
    out = fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="CHW", mirror=fn.random.coin_flip(),
                                   mean=[123.68, 116.78, 103.94], std=[58.4, 57.1, 57.4], **crop)
    return out, labels


pl = pipe()
pl.build()
pl.run()  # warm-up
steps = max(1, files // a.batch)
t0 = time.perf_counter()
for _ in range(steps):
    out, _ = pl.run()
secs = time.perf_counter() - t0
shape = out.at(0).shape
print(json.dumps({"images_per_sec": steps * a.batch / secs, "seconds": secs, "images": steps * a.batch,
                  "threads": a.threads, "mode": a.mode, "roi": a.roi, "shape": list(shape)}))
