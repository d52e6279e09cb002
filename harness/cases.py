"""Test and benchmark cases: one dataclass per case, named grids of cases.

A case fixes shapes, unit count, scale, displacement range, stride, order and seed; it
draws its float64 tensors deterministically from its seed (``arrays``), so a failing case
is re-run exactly from its printed fields.
"""

from dataclasses import asdict, dataclass, replace

import numpy as np

from ..reference import LAYERS


@dataclass(frozen=True)
class Case:
    """One layer configuration.

    ``spread``: displacements / positions uniform in ``[-spread, spread]`` plus ``offset``;
    ``displace``: ``"random"``, ``"integer"`` (rounded) or ``"near-integer"`` (integer +- 1e-6..1e-4);
    ``radius``: ``blur_radius`` (dau), ``radius`` (dau_gauss, njet), None for the default;
    ``groups``: ACU position groups (0: one shared ``[K]`` set);
    ``channel_groups``: the ``groups`` argument of dau, dau_gauss and njet (nn.Conv2d's channel groups:
    weights ``[F, S/G, ...]``; ``= s = f`` is depthwise), apart from ACU's position groups;
    ``per_unit_sigma``: dau_gauss with ``sigma [F,S,K]``; ``contiguous``: False gives ``x`` permuted strides;
    ``scale``: the data arrays (``x``, the weights, ``bias``) multiplied by it (1e-20: outputs
    near 1e-40, below the smallest normal float32; 1e15: outputs near 1e30, the largest scale whose
    products stay finite in float32, as 1e20 would reach 1e40 > 3.4e38).
    """

    name: str
    layer: str
    n: int = 2
    s: int = 3
    f: int = 4
    h: int = 7
    w: int = 6
    k: int = 2
    sigma: float = 0.8
    spread: float = 3.0
    offset: float = 0.0
    displace: str = "random"
    stride: int = 1
    order: int = 2
    radius: int = None
    groups: int = 0
    channel_groups: int = 1
    per_unit_sigma: bool = False
    mu_grad: str = "exact"
    bias: bool = True
    contiguous: bool = True
    seed: int = 0
    scale: float = 1.0

    @property
    def id(self):
        return f"{self.layer}-{self.name}"

    def fields(self):
        out = asdict(self)
        for name, plain in (("scale", 1.0), ("channel_groups", 1)):
            if out[name] == plain:  # such cases keep the fields (and the speed-group keys) they had
                del out[name]
        return out

    def resolved_radius(self):
        """The radius the layer will use: the case's, else the default rule of the layer's table for ``sigma``."""
        if self.radius is not None:
            return self.radius
        layer = LAYERS[self.layer]
        rule = layer.param(layer.radius) if layer.radius else None
        if rule is None or rule.factor is None:
            raise ValueError(f"case {self.id}: {self.layer} has no default radius")
        return rule.radius_from(self.sigma, layer.defaults())

    def out_shape(self):
        return (self.n, self.f, -(-self.h // self.stride), -(-self.w // self.stride))

    def _displacements(self, rng, shape):
        d = rng.uniform(-self.spread, self.spread, shape) + self.offset
        if self.displace == "integer":
            return np.round(d)
        if self.displace == "near-integer":
            eps = rng.uniform(1e-6, 1e-4, shape) * rng.choice([-1.0, 1.0], shape)
            return np.round(d) + eps
        return d

    def arrays(self, seed=0):
        """The case's float64 arguments (``seed`` is mixed with the case's own) -> dict name -> array."""
        rng = np.random.default_rng([self.seed, seed])
        f_, s_, k_ = self.f, self.s // self.channel_groups, self.k
        a = {"x": rng.standard_normal((self.n, self.s, self.h, self.w))}
        if self.layer in ("dau", "dau_gauss"):
            a["weight"] = rng.standard_normal((f_, s_, k_))
            a["mu_x"] = self._displacements(rng, (f_, s_, k_))
            a["mu_y"] = self._displacements(rng, (f_, s_, k_))
            if self.per_unit_sigma:
                a["sigma"] = self.sigma * rng.uniform(0.7, 1.3, (f_, s_, k_))
            else:
                a["sigma"] = np.asarray(self.sigma)
        elif self.layer == "acu":
            a["weight"] = rng.standard_normal((f_, s_, k_))
            pshape = (self.groups, k_) if self.groups else (k_,)
            a["pos_x"] = self._displacements(rng, pshape)
            a["pos_y"] = self._displacements(rng, pshape)
        elif self.layer == "njet":
            j_ = (self.order + 1) * (self.order + 2) // 2
            a["alpha"] = rng.standard_normal((f_, s_, j_))
            a["sigma"] = np.asarray(self.sigma)
        if self.bias:
            a["bias"] = rng.standard_normal(f_)
        else:
            a["bias"] = None
        if self.scale != 1.0:
            for k in ("x", "weight", "alpha", "bias"):
                if a.get(k) is not None:
                    a[k] = a[k] * self.scale
        return a

    def hparams(self, backward=False):
        """Keyword hyper-parameters of the forward (``backward``: also those only the backward reads), as the
        public API and the reference take them: the layer's table's parameters that the case sets (a field
        of the parameter's name; ``radius`` for the layer's radius, resolved)."""
        layer = LAYERS[self.layer]
        hp = {}
        for p in layer.params:
            if p.name == layer.radius:
                hp[p.name] = self.resolved_radius()
            elif p.name == "groups":  # the layer's channel groups (``groups`` is ACU's position groups)
                if self.channel_groups != 1:
                    hp[p.name] = self.channel_groups
            elif hasattr(self, p.name) and (p.forward or backward):
                hp[p.name] = getattr(self, p.name)
        return hp

    def backward_hparams(self):
        """Every hyper-parameter the case sets (``hparams(backward=True)``)."""
        return self.hparams(backward=True)


def _awkward(layer, **base):
    """The awkward cases every layer is tested on (odd sizes, H = W = 1, batch 0, stride 2,
    displacements beyond the image, negative / integer / near-integer displacements,
    non-contiguous input, no bias)."""
    c = Case("odd", layer, **base)
    cases = [
        c,
        replace(c, name="stride2", stride=2, h=9, w=8, seed=1),
        replace(c, name="stride3", stride=3, h=8, w=7, seed=2),
        replace(c, name="pixel", h=1, w=1, seed=3),
        replace(c, name="batch0", n=0, seed=4),
        replace(c, name="beyond", offset=-9.0, spread=4.0, seed=5),
        replace(c, name="integer", displace="integer", seed=6),
        replace(c, name="near-integer", displace="near-integer", seed=7),
        replace(c, name="strided-x", contiguous=False, bias=False, seed=8),
    ]
    if layer == "njet":  # no displacements: vary order and scale instead
        cases = [d for d in cases if d.name not in ("beyond", "integer", "near-integer")]
        cases += [replace(c, name="order0", order=0, seed=9), replace(c, name="order4", order=4, sigma=1.3, seed=10)]
    return cases


def _smoke():
    cases = []
    cases += _awkward("dau", k=3, sigma=0.7)
    cases.append(Case("gauss-grad", "dau", k=3, mu_grad="gauss", sigma=0.9, seed=11))
    cases.append(Case("radius0", "dau", k=2, radius=0, sigma=0.4, seed=12))
    cases += _awkward("dau_gauss", k=3, radius=3, sigma=0.9)
    cases.append(Case("per-unit-sigma", "dau_gauss", k=3, radius=2, per_unit_sigma=True, seed=13))
    cases += _awkward("acu", k=5, spread=2.5)
    cases.append(Case("groups", "acu", k=4, f=6, groups=3, seed=14))
    cases += _awkward("njet", sigma=0.9, order=2)
    cases += _depthwise()
    return cases


def _depthwise():
    """Depthwise (``groups = S = F``, DCLS's main use) for each layer with channel groups: odd sizes, stride 2."""
    base = dict(n=2, s=4, f=4, h=7, w=6, channel_groups=4)
    return [
        Case("depthwise", "dau", **base, k=3, sigma=0.7, seed=15),
        Case("depthwise", "dau_gauss", **base, k=3, radius=3, sigma=0.9, seed=16),
        Case("depthwise-stride2", "njet", **base, order=2, sigma=0.9, stride=2, seed=17),
    ]


def _groups2():
    """Two channel groups, ``F/G != S/G``, on the default grid's awkward shapes."""
    base = dict(n=2, s=4, f=6, h=9, w=8, channel_groups=2)
    return [
        Case("groups2", "dau", **base, k=3, sigma=0.8, seed=34),
        Case("groups2-stride2", "dau", **base, k=2, sigma=0.8, stride=2, seed=35),
        Case("groups2-gauss-grad", "dau", **base, k=2, mu_grad="gauss", seed=36),
        Case("groups2", "dau_gauss", **base, k=2, radius=3, per_unit_sigma=True, seed=37),
        Case("groups2-stride2", "njet", **base, order=3, sigma=1.2, stride=2, seed=38),
    ]


def _default():
    cases = list(_smoke())
    for layer in ("dau", "dau_gauss", "acu", "njet"):
        big = Case(
            "wide",
            layer,
            n=2,
            s=5,
            f=6,
            h=15,
            w=13,
            k=4,
            sigma=1.2,
            spread=6.0,
            radius=4 if layer == "dau_gauss" else None,
            seed=20,
        )
        cases += [
            big,
            replace(big, name="wide-stride2", stride=2, seed=21),
            replace(big, name="far", offset=15.0, seed=22),
        ]
    cases += [
        Case("gauss-grad-stride2", "dau", k=3, mu_grad="gauss", stride=2, h=10, w=9, seed=23),
        Case("gauss-grad-integer", "dau", k=3, mu_grad="gauss", displace="integer", seed=24),
        Case("sigma-large", "dau", k=2, sigma=2.1, seed=25),
        Case("groups-stride2", "acu", k=9, f=4, groups=2, stride=2, h=9, w=10, seed=26),
        Case("order3-stride2", "njet", order=3, sigma=1.5, stride=2, h=12, w=11, seed=27),
        Case("per-unit-sigma-stride2", "dau_gauss", k=2, radius=3, per_unit_sigma=True, stride=2, seed=28),
    ]
    cases += _groups2()
    cases += _blur0()
    return cases


def _blur0():
    """``dau`` without a blur (``blur_radius = 0``): what DCLS v1 expresses (reference/README.md
    section 12), on awkward shapes and positions, for every backend."""
    c = Case("radius0-stride2", "dau", k=3, radius=0, sigma=0.6, stride=2, h=9, w=8, seed=29)
    return [
        c,
        replace(c, name="radius0-beyond", stride=1, offset=-9.0, spread=4.0, seed=34),
        replace(c, name="radius0-near-integer", stride=1, displace="near-integer", seed=35),
        replace(c, name="radius0-integer", stride=1, displace="integer", seed=36),
        replace(c, name="radius0-groups3", s=6, f=9, channel_groups=3, stride=1, seed=39),  # Dcls2d's groups
    ]


def _paper():
    """DAU IJCV section 4.4: K = 2 units, displacements up to 4 px (a 9 x 9 standard kernel),
    192 output channels, 32 x 32 input.  N = 8 and S = 64 are our choice, as for the middle layer
    of a 3-layer network on 32 x 32 images.  Sweeps (smaller N, S, F so that the whole grid runs
    on a 2-core CPU): the maximum displacement (standard kernel side 5 to 33) and K (1 to 6) for
    DAU, the number of synapses and their spread for ACU, sigma and order for N-Jet.  ``paper-depthwise``:
    the paper's DAU, N-Jet and dau_gauss layers depthwise (``groups = S = F = 192``; DCLS's main use, ConvNeXt's
    depthwise convolutions), measured against a depthwise dense conv of the units' spread."""
    main = dict(n=8, s=64, f=192, h=32, w=32)
    dw = dict(n=8, s=192, f=192, h=32, w=32, channel_groups=192)
    small = dict(n=2, s=32, f=64, h=32, w=32)
    out = [
        Case("paper", "dau", **main, k=2, sigma=0.5, spread=4.0, radius=2, seed=30),
        Case("paper", "acu", **main, k=9, spread=1.5, seed=31),
        Case("paper", "njet", **main, order=2, sigma=1.0, seed=32),
        Case("paper", "dau_gauss", **main, k=2, sigma=0.5, spread=2.0, radius=4, seed=33),
        Case("paper-depthwise", "dau", **dw, k=2, sigma=0.5, spread=4.0, radius=2, seed=100),
        Case("paper-depthwise", "njet", **dw, order=2, sigma=1.0, seed=101),
        Case("paper-depthwise", "dau_gauss", **dw, k=2, sigma=0.5, spread=2.0, radius=4, seed=102),
        # the paper case without its blur: what DCLS v1 computes (the peer's speed at the paper shape)
        Case("paper-blur0", "dau", **main, k=2, sigma=0.5, spread=4.0, radius=0, seed=30),
    ]
    out += [
        Case(f"side{2 * d + 1}", "dau", **small, k=2, sigma=0.5, spread=d - 1e-3, radius=2, seed=40 + d)
        for d in range(2, 17, 2)
    ]
    out += [Case(f"k{k}", "dau", **small, k=k, sigma=0.5, spread=4 - 1e-3, radius=2, seed=60 + k) for k in range(1, 7)]
    out += [Case(f"syn{k}", "acu", **small, k=k, spread=1.5, seed=70 + k) for k in (4, 9, 16, 25)]
    out += [Case(f"spread{sp:g}", "acu", **small, k=9, spread=sp, seed=80 + i) for i, sp in enumerate((3.0, 6.0))]
    out += [
        Case(f"sigma{sg:g}", "njet", **small, order=2, sigma=sg, seed=90 + i)
        for i, sg in enumerate((0.5, 1.0, 2.0, 3.0))
    ]
    out += [Case(f"order{o}", "njet", **small, order=o, sigma=1.5, seed=95 + o) for o in (1, 2, 3, 4)]
    return out


GRIDS = {
    "smoke": _smoke,
    "default": _default,
    "paper": _paper,
    "full": lambda: _default() + _paper(),
}


def grid(name, layers=None):
    """Cases of a named grid, optionally restricted to ``layers``."""
    if name not in GRIDS:
        raise ValueError(f"grid: expected one of {sorted(GRIDS)}, got {name!r}")
    return [c for c in GRIDS[name]() if layers is None or c.layer in layers]
