#!/usr/bin/python3
"""The Python peer of bench/peers.sh: the same work as our bench recipes, written the way
a PyTorch user would write it with the stock tools (Debian's python3-torch 1.13).

Benchmark code only (issue 17): nothing in mcompress runs Python. Each pipeline prints
one JSON line: accuracies, wall time per phase, the saved file's size.

Same as ours: data (Fashion-MNIST, [0,1] then (x - 0.2860) / 0.3530), the 55k/5k
train/validation split (the very same images: SeededPermutation reimplemented below),
network shapes, optimizer (SGD momentum 0.9, Nesterov, weight decay 5e-4 for training),
per-step cosine schedule to 0, batch 128, evaluation batch 256, seed value, threads.
Differs, by nature: weight initialisation and shuffling draws (PyTorch's RNG, not ours),
so accuracies agree within seed noise, not bit for bit.

Pipelines:
  train  MODEL EPOCHS                      plain training
  prune  MODEL EPOCHS SPARSITY FT_EPOCHS   train, torch.nn.utils.prune.global_unstructured
                                           (L1), fine-tune with masks, prune.remove
  ptq    MODEL EPOCHS CALIB                train, torch.ao.quantization FX post-training
                                           quantization (onednn qconfig: Debian's torch has no
                                           FBGEMM engine), CALIB images
  qat    MODEL EPOCHS QAT_EPOCHS           train, FX QAT (onednn QAT qconfig), convert
  kd     TEACHER T_EPOCHS STUDENT EPOCHS   train the teacher, then the student with Hinton
                                           KD (T 4, alpha 0.9: T^2-scaled KL + CE)
"""
import argparse
import gzip
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DATA = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530


# ---- data: IDX files and our split ------------------------------------------------------

def read_idx(images, labels):
    with gzip.open(images, "rb") as f:
        raw = f.read()
    n, rows, cols = (int.from_bytes(raw[i:i + 4], "big") for i in (4, 8, 12))
    x = np.frombuffer(raw, np.uint8, offset=16).reshape(n, 1, rows, cols)
    with gzip.open(labels, "rb") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    x = (torch.from_numpy(x.astype(np.float32)) / 255.0 - MEAN) / STD
    return x, torch.from_numpy(y.astype(np.int64))


class Mt19937_64:
    """std::mt19937_64 (C++11 [rand.predef]: its 10000th output from the default seed is
    9981545732273789042), so that the split below is ours."""
    N, M, A = 312, 156, 0xB5026F5AA96619E9
    MASK = (1 << 64) - 1
    LOWER = (1 << 31) - 1
    UPPER = MASK ^ LOWER

    def __init__(self, seed):
        self.mt = [seed & self.MASK]
        for i in range(1, self.N):
            prev = self.mt[-1]
            self.mt.append((6364136223846793005 * (prev ^ (prev >> 62)) + i) & self.MASK)
        self.i = self.N

    def __call__(self):
        if self.i >= self.N:
            mt = self.mt
            for k in range(self.N):
                x = (mt[k] & self.UPPER) | (mt[(k + 1) % self.N] & self.LOWER)
                xa = (x >> 1) ^ (self.A if x & 1 else 0)
                mt[k] = mt[(k + self.M) % self.N] ^ xa
            self.i = 0
        y = self.mt[self.i]
        self.i += 1
        y ^= (y >> 29) & 0x5555555555555555
        y ^= (y << 17) & 0x71D67FFFEDA60000
        y ^= (y << 37) & 0xFFF7EEE000000000
        y ^= y >> 43
        return y & self.MASK


def seeded_permutation(n, seed):
    """compress/data/data.cpp SeededPermutation: Fisher-Yates, j = (draw * (i+1)) >> 64."""
    perm = list(range(n))
    rng = Mt19937_64(seed)
    for i in range(n - 1, 0, -1):
        j = (rng() * (i + 1)) >> 64
        perm[i], perm[j] = perm[j], perm[i]
    return torch.tensor(perm, dtype=torch.int64)


def load(seed, train_limit, validation=5000):
    x, y = read_idx(f"{DATA}/train-images-idx3-ubyte.gz", f"{DATA}/train-labels-idx1-ubyte.gz")
    perm = seeded_permutation(x.shape[0], seed)
    rest = perm[validation:]
    if train_limit:
        rest = rest[:train_limit]
    val = perm[:validation]
    tx, ty = read_idx(f"{DATA}/t10k-images-idx3-ubyte.gz", f"{DATA}/t10k-labels-idx1-ubyte.gz")
    return (x[rest], y[rest]), (x[val], y[val]), (tx, ty)


# ---- the zoo networks, layer for layer (compress/zoo/zoo.cpp) ---------------------------

def width(c, w):
    return max(1, int(round(c * w)))


def build(name):
    model, _, w = name.partition("?width=")
    w = float(w) if w else 1.0
    W = lambda c: width(c, w)  # noqa: E731
    if model == "mlp-300-100":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, W(300)), nn.ReLU(),
                             nn.Linear(W(300), W(100)), nn.ReLU(), nn.Linear(W(100), 10))
    if model == "lenet5":
        return nn.Sequential(nn.Conv2d(1, W(6), 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(W(6), W(16), 5), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(W(16) * 25, W(120)), nn.ReLU(),
                             nn.Linear(W(120), W(84)), nn.ReLU(), nn.Linear(W(84), 10))
    if model == "convnet":
        return nn.Sequential(nn.Conv2d(1, W(32), 3, padding=1, bias=False),
                             nn.BatchNorm2d(W(32)), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(W(32), W(64), 3, padding=1, bias=False),
                             nn.BatchNorm2d(W(64)), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(W(64) * 49, W(128)), nn.ReLU(),
                             nn.Linear(W(128), 10))
    raise SystemExit(f"peer.py: unknown model {name!r}; expected mlp-300-100, lenet5, convnet")


# ---- training and evaluation --------------------------------------------------------------

def train(model, data, epochs, lr, nesterov=True, weight_decay=5e-4, teacher=None,
          temperature=4.0, alpha=0.9, batch=128):
    """SGD momentum 0.9, per-step cosine to 0 (as ours: lr_t = lr/2 (1 + cos(pi t / T)))."""
    x, y = data
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=nesterov,
                          weight_decay=weight_decay)
    steps_per_epoch = math.ceil(x.shape[0] / batch)
    total = epochs * steps_per_epoch
    step = 0
    epoch_seconds = []
    if teacher is not None:
        teacher.eval()
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        perm = torch.randperm(x.shape[0])
        for b in range(steps_per_epoch):
            idx = perm[b * batch:(b + 1) * batch]
            xb, yb = x[idx], y[idx]
            for g in opt.param_groups:
                g["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * step / total))
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            if teacher is not None:
                with torch.no_grad():
                    t = teacher(xb)
                soft = F.kl_div(F.log_softmax(out / temperature, 1),
                                F.softmax(t / temperature, 1),
                                reduction="batchmean") * temperature * temperature
                loss = alpha * soft + (1.0 - alpha) * loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        epoch_seconds.append(time.perf_counter() - start)
    return epoch_seconds


def evaluate(model, data, batch=256):
    x, y = data
    model.eval()
    correct = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for b in range(0, x.shape[0], batch):
            correct += (model(x[b:b + batch]).argmax(1) == y[b:b + batch]).sum().item()
    return 100.0 * correct / x.shape[0], time.perf_counter() - start


def saved_size(model, example, path):
    """Bytes of the deployable file: a traced TorchScript module (the FX INT8 model's
    only runnable export in 1.13: its ONNX export of quantized ops is not supported)."""
    with torch.no_grad():
        torch.jit.save(torch.jit.trace(model.eval(), example), path)
    return os.path.getsize(path)


# ---- pipelines ------------------------------------------------------------------------------

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("pipeline", choices=["train", "prune", "ptq", "qat", "kd"])
    p.add_argument("args", nargs="*")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--train-limit", type=int, default=0)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--ft-lr", type=float, default=0.01)
    p.add_argument("--out", default="/tmp")
    p.add_argument("--save-init", action="store_true",
                   help="train: also save the initial model, traced, as OUT/peer_init.pt "
                        "(ours then trains the very same network from the same weights)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    t0 = time.perf_counter()
    train_set, val_set, test_set = load(a.seed, a.train_limit)
    r = {"pipeline": a.pipeline, "args": a.args, "threads": torch.get_num_threads(),
         "torch": torch.__version__, "load_s": time.perf_counter() - t0,
         "train_samples": int(train_set[0].shape[0])}
    example = test_set[0][:1]
    phases = {}

    def timed(name, fn):
        start = time.perf_counter()
        out = fn()
        phases[name] = time.perf_counter() - start
        return out

    if a.pipeline == "kd":
        teacher_name, t_epochs, student_name, epochs = a.args[0], int(a.args[1]), a.args[2], int(a.args[3])
        teacher = build(teacher_name)
        r["teacher_epoch_s"] = timed("teacher_train", lambda: train(teacher, train_set, t_epochs, a.lr))
        r["teacher_test"] = evaluate(teacher, test_set)[0]
        model = build(student_name)
        r["epoch_s"] = timed("distill", lambda: train(model, train_set, epochs, a.lr, teacher=teacher))
    else:
        model_name, epochs = a.args[0], int(a.args[1])
        model = build(model_name)
        if a.save_init:
            with torch.no_grad():
                torch.jit.save(torch.jit.trace(model.eval(), example), f"{a.out}/peer_init.pt")
            model.train()
        r["epoch_s"] = timed("train", lambda: train(model, train_set, epochs, a.lr))
    r["val"] = evaluate(model, val_set)[0]
    r["test"], r["eval_s"] = evaluate(model, test_set)
    r["fp32_bytes"] = saved_size(model, example, f"{a.out}/peer_fp32.pt")

    if a.pipeline == "prune":
        import torch.nn.utils.prune as prune
        sparsity, ft_epochs = float(a.args[2]), int(a.args[3])
        params = [(m, "weight") for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        timed("prune", lambda: prune.global_unstructured(
            params, pruning_method=prune.L1Unstructured, amount=sparsity))
        r["pruned_val"] = evaluate(model, val_set)[0]
        r["ft_epoch_s"] = timed("finetune", lambda: train(model, train_set, ft_epochs, a.ft_lr,
                                                          nesterov=False, weight_decay=0.0))
        for m, n in params:
            prune.remove(m, n)
        zeros = sum(int((m.weight == 0).sum()) for m, _ in params)
        r["sparsity"] = zeros / sum(m.weight.numel() for m, _ in params)
        r["final_val"] = evaluate(model, val_set)[0]
        r["final_test"] = evaluate(model, test_set)[0]
        r["final_bytes"] = saved_size(model, example, f"{a.out}/peer_pruned.pt")
    elif a.pipeline in ("ptq", "qat"):
        from torch.ao.quantization import (get_default_qat_qconfig_mapping,
                                           get_default_qconfig_mapping)
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx, prepare_qat_fx
        torch.backends.quantized.engine = "onednn"
        if a.pipeline == "ptq":
            calib = int(a.args[2])
            g = torch.Generator().manual_seed(a.seed)
            idx = torch.randperm(train_set[0].shape[0], generator=g)[:calib]
            cx = train_set[0][idx]

            def ptq():
                m = prepare_fx(model.eval(), get_default_qconfig_mapping("onednn"), (example,))
                with torch.inference_mode():
                    for b in range(0, calib, 128):
                        m(cx[b:b + 128])
                return convert_fx(m)
            q = timed("quantize", ptq)
        else:
            qat_epochs = int(a.args[2])
            m = prepare_qat_fx(model.train(), get_default_qat_qconfig_mapping("onednn"), (example,))
            r["qat_epoch_s"] = timed("qat", lambda: train(m, train_set, qat_epochs, a.ft_lr,
                                                          nesterov=False, weight_decay=0.0))
            q = timed("convert", lambda: convert_fx(m.eval()))
        r["final_val"] = evaluate(q, val_set)[0]
        r["final_test"], r["int8_eval_s"] = evaluate(q, test_set)
        r["final_bytes"] = saved_size(q, example, f"{a.out}/peer_int8.pt")
    r["phases_s"] = phases
    r["total_s"] = time.perf_counter() - t0
    print(json.dumps(r))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--self-test":
        rng = Mt19937_64(5489)
        for _ in range(9999):
            rng()
        assert rng() == 9981545732273789042, "mt19937_64 does not match the C++ standard"
        print("mt19937_64 ok")
    else:
        main()
