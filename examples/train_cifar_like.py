"""Train a small DAU -> ACU -> N-Jet network on synthetic multi-scale images (no downloads).

Each 3x32x32 image is white noise blurred by an anisotropic Gaussian; the class is its scale
(fine, medium or coarse) times its orientation (horizontal or vertical), with the scale jittered, random
colour and contrast, and a little white noise on top. Telling the classes apart needs receptive
fields of the right size and shape, which is what the three layers learn: DAU displacements,
ACU synapse positions and the N-Jet scale. The script prints the loss and accuracy while it trains,
then the learned displacement / position / sigma statistics, then prunes small DAU units.

    python examples/train_cifar_like.py [--steps 300] [--backend torch-naive]

with rfbench installed (README); from a checkout with nothing installed, ``python -m
examples.train_cifar_like`` in its root.
"""

import argparse
import math
import time

import torch
import torch.nn.functional as tnf
from torch import nn

from rfbench import nn as rn

SCALES = (0.6, 1.2, 2.4)  # minor-axis blur of the fine, medium and coarse classes, in pixels
SIZE, CLASSES = 32, 2 * len(SCALES)


def blur1d(x, sigma, dim):
    """Blur ``x [N,C,H,W]`` along ``dim`` (2 rows, 3 columns) with a Gaussian of per-sample ``sigma [N]``."""
    r = math.ceil(3 * float(sigma.max()))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    g = torch.exp(-(t**2) / (2 * sigma[:, None] ** 2))
    g = g / g.sum(1, keepdim=True)  # [N, 2r+1]
    n, c = x.shape[:2]
    shape = (n * c, 1, 2 * r + 1, 1) if dim == 2 else (n * c, 1, 1, 2 * r + 1)
    pad = (0, 0, r, r) if dim == 2 else (r, r, 0, 0)
    k = g.repeat_interleave(c, 0).reshape(shape)
    y = tnf.conv2d(tnf.pad(x.reshape(1, n * c, *x.shape[2:]), pad, mode="circular"), k, groups=n * c)
    return y.reshape(x.shape)


def make_batch(n, gen):
    """``n`` images ``[n, 3, 32, 32]`` and labels ``[n]``: label = 2 * scale index + vertical."""
    label = torch.randint(0, CLASSES, (n,), generator=gen)
    scale, vertical = label // 2, label % 2
    minor = torch.tensor(SCALES)[scale] * torch.empty(n).uniform_(0.85, 1.18, generator=gen)
    major = 3 * minor
    noise = torch.randn(n, 1, SIZE, SIZE, generator=gen)
    sy = torch.where(vertical.bool(), major, minor)  # vertical structures: long along rows
    sx = torch.where(vertical.bool(), minor, major)
    img = blur1d(blur1d(noise, sy, 2), sx, 3)
    img = img / img.flatten(1).std(1)[:, None, None, None]
    colour = torch.empty(n, 3, 1, 1).uniform_(0.3, 1.0, generator=gen)
    contrast = torch.empty(n, 1, 1, 1).uniform_(0.5, 1.5, generator=gen)
    x = contrast * colour * img + 0.1 * torch.randn(n, 3, SIZE, SIZE, generator=gen)
    return x, label


class Net(nn.Module):
    """DAU (3->16) -> ACU (16->32, stride 2) -> N-Jet (32->32) -> safe subsampling -> pool -> linear."""

    def __init__(self, backend):
        super().__init__()
        self.dau = rn.DAUConv2d(3, 16, units=2, sigma=0.5, backend=backend)
        self.acu = rn.ACUConv2d(16, 32, synapses=9, stride=2, backend=backend)
        self.njet = rn.NJetConv2d(32, 32, order=2, sigma=1.0, backend=backend)
        self.bn1, self.bn2, self.bn3 = nn.BatchNorm2d(16), nn.BatchNorm2d(32), nn.BatchNorm2d(32)
        self.head = nn.Linear(32, CLASSES)

    def forward(self, x):
        x = torch.relu(self.bn1(self.dau(x)))
        x = torch.relu(self.bn2(self.acu(x)))
        x = torch.relu(self.bn3(self.njet(x)))
        x = rn.safe_subsample(x, self.njet.sigma.detach())
        return self.head(x.mean((2, 3)))


@torch.no_grad()
def accuracy(net, x, y):
    net.eval()
    acc = float((net(x).argmax(1) == y).float().mean())
    net.train()
    return acc


@torch.no_grad()
def stats(net):
    """Learned receptive-field statistics, one line per layer."""
    d, a, n = net.dau, net.acu, net.njet
    mu = torch.stack((d.mu_x, d.mu_y))
    off = torch.hypot(mu[0], mu[1])
    gx, gy, _ = rn.acu_offsets(9, "grid3x3")
    move = torch.hypot(a.pos_x - a.pos_x.new_tensor(gx), a.pos_y - a.pos_y.new_tensor(gy))
    dau = (
        f"DAU   mu_x mean {float(mu[0].mean()):+.3f} std {float(mu[0].std()):.3f}"
        f" | mu_y mean {float(mu[1].mean()):+.3f} std {float(mu[1].std()):.3f}"
        f" | |mu| mean {float(off.mean()):.3f} max {float(off.max()):.3f}"
        f" | beyond 1.5 px {float((mu.abs() > 1.5).float().mean()):.1%} | sigma {float(d.sigma):.3f} (fixed)"
    )
    acu = (
        f"ACU   synapse moves from the 3x3 grid: mean {float(move.mean()):.3f} max {float(move.max()):.3f} px"
        f" | centre ({float(a.pos_x[4]):.1f}, {float(a.pos_y[4]):.1f})"
    )
    njet = f"N-Jet sigma {float(n.sigma):.3f} (started at 1.000), radius {math.ceil(n.extent * float(n.sigma))}"
    return [dau, acu, njet]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--mu-lr-factor", type=float, default=5.0, help="displacement / position learning-rate factor")
    p.add_argument("--warmup", type=int, default=50, help="steps with frozen ACU positions")
    p.add_argument("--prune", type=float, default=0.1, help="relative weight threshold of DAU pruning")
    p.add_argument("--backend", default="torch-naive", help="rfbench backend (auto picks the fastest)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    test_x, test_y = make_batch(512, gen)
    net = Net(args.backend)
    opt = torch.optim.Adam(rn.param_groups(net, lr=args.lr, mu_lr_factor=args.mu_lr_factor))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
    warm = rn.PositionWarmup(net, args.warmup)
    start = time.perf_counter()
    print(f"training {args.steps} steps, batch {args.batch}, backend {args.backend}, chance {1 / CLASSES:.0%}")
    for step in range(1, args.steps + 1):
        x, y = make_batch(args.batch, gen)
        loss = tnf.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        rn.normalize_position_grads(net)  # ACU Eq. 15-16, on the whole step's gradient
        opt.step()
        sched.step()
        warm.step()
        if step % 50 == 0 or step == args.steps:
            print(
                f"step {step:4d}  loss {loss.item():.4f}  test accuracy {accuracy(net, test_x, test_y):.1%}"
                f"  N-Jet sigma {float(net.njet.sigma.detach()):.3f}  {time.perf_counter() - start:.1f} s"
            )
    for line in stats(net):
        print(line)
    before = accuracy(net, test_x, test_y)
    removed = rn.prune_units(net, args.prune)
    print(
        f"pruned {removed} of {net.dau.unit_mask.numel()} DAU units (|w| < {args.prune} max |w|): "
        f"test accuracy {before:.1%} -> {accuracy(net, test_x, test_y):.1%}"
    )
    print(f"total {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
