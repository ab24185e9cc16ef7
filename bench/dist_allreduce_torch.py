"""The Python side of bench/dist_bench.sh: torch.distributed all-reduce of f32 buffers, timed exactly as
`trainer allreduce-bench` times ours (fill, start, wait; median of the timed iterations), one JSON line
per size from rank 0. Run under torchrun, e.g.
    torchrun --standalone --nproc-per-node=2 bench/dist_allreduce_torch.py --sizes 1000,25000000
"""
import argparse
import json
import os
import time

import torch
import torch.distributed as dist


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000,100000,1000000,10000000,25000000")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    cuda = a.device.startswith("cuda")
    dist.init_process_group("nccl" if cuda else "gloo")
    world, rank = dist.get_world_size(), dist.get_rank()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu")
    for n in [int(s) for s in a.sizes.split(",")]:
        t = torch.ones(n, dtype=torch.float32, device=device)
        times = []
        for i in range(a.warmup + a.iters):
            t.fill_(1.0)
            if cuda:
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            dist.all_reduce(t)
            if cuda:
                torch.cuda.synchronize(device)
            if i >= a.warmup:
                times.append(time.perf_counter() - t0)
        assert t[-1].item() == world, t[-1].item()
        times.sort()
        s = times[len(times) // 2]
        algbw = n * 4 / s / 1e9
        if rank == 0:
            print(json.dumps({"floats": n, "ms": s * 1e3, "algbw_gbps": algbw, "busbw_gbps": algbw * 2 * (world - 1) / world}), flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
