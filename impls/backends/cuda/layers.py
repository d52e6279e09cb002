"""Layer glue shared by the CUDA backends (``numba-cuda``, ``cupy``): the efficient algorithms
of reference/README.md sections 2-5 written once over a small set of kernel primitives.

A CUDA backend is a primitives file whose ``OPS = ops(Prims())`` (the backend interface of
``impls.backends``): ``Prims`` is an object ``P`` whose methods take and return torch tensors
(outputs are allocated by the primitive, integer index tensors are int32 on the data's device):

    cpass(inp [B,Ci,Hi,Wi], taps [nf,T], cin [Co], fil [Co], st, off, rows, n_out) -> [B,Co,..]
        1-D correlation along rows (``rows=True``) or columns: output ``o`` of channel ``c``
        reads input index ``o st + it + off`` of channel ``cin[c]`` with tap ``taps[fil[c], it]``.
    tpass(dout, taps, cin, fil, st, off, rows, n_in, c_in) -> [B,c_in,..]   adjoint of cpass in inp
    dtaps(dout, inp, cin, nt, st, off, rows) -> [Co, nt]                   adjoint of cpass in the taps, per c
    shift(c [N,S,Hc,Wc], a4 [F,S,K,4], fy, fx [F,S,K], st, ho, wo) -> [N,F,Ho,Wo]
        ``y[n,f,i,j] = sum_{s,k,m} a4[f,s,k,m] c[n,s, i st + fy + da, j st + fx + db]``, ``m = 2 da + db``
    tapsum(c, dy, fy, fx, st) -> [F,S,K,4]        ``sum_{n,i,j} dy[n,f,i,j] c[n,s, tap m]``
    scatter(dy, a4, fy, fx, st, s, hc, wc) -> [N,S,Hc,Wc]   adjoint of shift in c
    sample(x, a4 [G,K,4], fy, fx [G,K], st, ho, wo) -> [N,G,S,K,Ho,Wo]   per-unit bilinear samples
    sample_t(e [N,G,S,K,Ho,Wo], a4, fy, fx, st, h, w) -> [N,S,H,W]       adjoint of sample in x
    sample_sums(e, x, fy, fx, st) -> [G,K,4]      ``sum_{n,s,i,j} e[n,g,s,k,i,j] x[n,s, tap m]``
    mix(bm [N,G,M,L], w [F,M], grp [F]) -> [N,F,L]   ``y[n,f] = sum_m w[f,m] bm[n, grp[f], m]``
    mix_t(dy [N,F,L], w, grp, g) -> [N,G,M,L]       adjoint in bm
    mix_dw(dy, bm, grp) -> [F,M]                    adjoint in w

Every map is read on the zero-extended plane (out-of-range reads give 0).  Coefficients (1-D
Gaussians, derivative filters, dense ``dau_gauss`` kernels) are built in torch with
``impls._math``; ``sigma`` gradients are chained from the gradients of those taps.

MACs (reference/README.md section 8), ``P = N Ho Wo``, ``b = 2 rb + 1``, ``Hc = H + 2 rb``, ``Wc = W + 2 rb``,
``G`` position groups, ``M = order + 1``, ``w = 2 r + 1``, ``R2 = (2R + 1)^2``:

- dau forward: blur ``N S (H Wc + Hc Wc) b`` + shift ``4 P F S K``.
  backward: weight and exact mu: one tap-sum pass ``4 P F S K`` (+ the blur again);
  gauss mu: two more tap-sum passes ``8 P F S K`` on ``x * Dx``, ``x * Dy`` (+ ``N S (2 H Wc + 2 Hc Wc) b``);
  x: scatter ``4 P F S K`` + adjoint blur ``N S (H Wc + H W) b``;
  sigma: the same scatter and adjoint row pass, + tap gradients ``N S (Hc Wc + H Wc) b``.
- acu forward: interpolate ``4 P S K G`` + mixing ``P F S K``.
  backward: ``P F S K`` (dL/d samples) + x ``4 P S K G`` + positions ``4 P S K G``
  + weight ``P F S K`` (+ re-interpolate ``4 P S K G``).
- njet forward: columns ``N S H Wo M w`` + rows ``P S J w`` + mixing ``P F S J``.
  backward: dL/dbasis ``P F S J``; alpha ``P F S J`` (+ both passes again);
  x ``P S J w + N S H Wo M w``; sigma (filter taps) ``P S J w + N S H Wo M w``.
- dau_gauss: the dense kernel (``F S K R2``) as ``R2`` integer units through shift / scatter /
  tapsum: forward ``4 P F S R2`` (3/4 of them with zero weight), backward ``4 P F S R2`` (x)
  + ``4 P F S R2`` (kernel).
"""

import torch

from ... import _math
from ..._groups import per_group


def _i32(a):
    return a.to(torch.int32).contiguous()


def floors(fl, n_in, n_out, st):
    """Integer sample floors ``fl`` (int64, input-plane indices) clamped to the reachable range -> int32.

    A floor ``p0`` reads input rows ``i st + p0 + {0, 1}`` for outputs ``i`` in ``[0, n_out)``.  Below
    ``-(n_out - 1) st - 2`` or at ``n_in`` and above every read is outside ``[0, n_in)`` (zero on the
    zero-extended plane, reference/README.md section 1), so clamping there changes no sample and no
    gradient, and the int32 index math of the kernels cannot wrap (``mu = 2**32`` gives zeros).
    """
    lo = -(max(n_out, 1) - 1) * st - 2
    return _i32(fl.clamp(lo, n_in))


def _add_bias(y, bias):
    return y if bias is None else y + bias[None, :, None, None]


def corner_weights(wy, wx):
    """Bilinear weights from ``_math.bilinear``'s 1-D weights ``[..., 2]`` -> ``[..., 4]``, index ``2 da + db``."""
    return _math.corner_weights(wy, wx).flatten(-2)


def pos_grads(t, wy, wx):
    """Position derivatives from corner sums ``t [..., 4]`` (floor held fixed) -> ``(d/dx, d/dy)``."""
    return _math.pos_grads(t.unflatten(-1, (2, 2)), wy, wx)


def _blur(P, x, gr, gc, r):
    """``x [N,S,H,W]`` correlated with ``outer(gr, gc)``, full extent -> ``(canvas [N,S,H+2r,W+2r], h)``.

    ``h [N S,1,H,W+2r]`` is the column pass; canvas index = coordinate + ``r``.
    """
    n, s, hh, w = x.shape
    one = torch.zeros(1, dtype=torch.int32, device=x.device)
    h = P.cpass(x.reshape(n * s, 1, hh, w), gc[None], one, one, 1, -2 * r, False, w + 2 * r)
    c = P.cpass(h, gr[None], one, one, 1, -2 * r, True, hh + 2 * r)
    return c.view(n, s, hh + 2 * r, w + 2 * r), h


class Dau:
    """Blur once on the zero-extended plane, bilinear shift per unit (DAU IJCV Eq. 13-14, 16)."""

    def __init__(self, prims):
        self.P = prims

    @staticmethod
    def _geom(t, r, st):
        """Canvas floors (clamped, int32) and 1-D bilinear weights ``[F,S,K,2]`` of the displacements."""
        h, w = t["x"].shape[2:]
        fy, ay = _math.bilinear(t["mu_y"].detach())
        fx, ax = _math.bilinear(t["mu_x"].detach())
        ho, wo = _math.out_size(h, st), _math.out_size(w, st)
        return floors(fy + r, h + 2 * r, ho, st), floors(fx + r, w + 2 * r, wo, st), ay, ax

    def forward(self, t, hp):
        x, r, st = t["x"].contiguous(), hp["keep"], hp["stride"]
        h, w = x.shape[2:]
        g = _math.gauss1d(t["sigma"].detach().reshape(()), hp["blur_radius"], r)
        fy, fx, ay, ax = self._geom(t, r, st)
        c, _ = _blur(self.P, x, g, g, r)
        a4 = (t["weight"][..., None] * corner_weights(ay, ax)).contiguous()
        y = self.P.shift(c, a4, fy, fx, st, _math.out_size(h, st), _math.out_size(w, st))
        return _add_bias(y, t["bias"]), {}

    def backward(self, t, saved, dy, hp, needs):
        P, x, weight, r, st = self.P, t["x"].contiguous(), t["weight"], hp["keep"], hp["stride"]
        n, s_, h, w = x.shape
        sig = t["sigma"].detach().reshape(())
        g = _math.gauss1d(sig, hp["blur_radius"], r)
        fy, fx, ay, ax = self._geom(t, r, st)
        wc = corner_weights(ay, ax)
        gauss = hp["mu_grad"] == "gauss"
        mus = bool(needs & {"mu_x", "mu_y"})
        out = {}
        if "weight" in needs or "sigma" in needs or (mus and not gauss):
            c, hx = _blur(P, x, g, g, r)
        if "weight" in needs or (mus and not gauss):
            tc = P.tapsum(c, dy, fy, fx, st)
            out["weight"] = (tc * wc).sum(-1)
            if mus and not gauss:
                gx, gy = pos_grads(tc, ay, ax)
                out["mu_x"], out["mu_y"] = weight * gx, weight * gy
        if mus and gauss:  # Dx(t,u) = g(t) gd(u), Dy(t,u) = gd(t) g(u)  (reference/README.md section 2)
            gd = _math.gauss_dx1d(sig, hp["blur_radius"], r)
            for name, gr, gc in (("mu_x", g, gd), ("mu_y", gd, g)):
                cd, _ = _blur(P, x, gr, gc, r)
                out[name] = weight * (P.tapsum(cd, dy, fy, fx, st) * wc).sum(-1)
        if needs & {"x", "sigma"}:
            a4 = (weight[..., None] * wc).contiguous()
            back = P.scatter(dy, a4, fy, fx, st, s_, h + 2 * r, w + 2 * r)
            back = back.view(n * s_, 1, h + 2 * r, w + 2 * r)
            one = torch.zeros(1, dtype=torch.int32, device=x.device)
            dh = P.tpass(back, g[None], one, one, 1, -2 * r, True, h, 1)  # dL/d(column pass)
            if "x" in needs:
                out["x"] = P.tpass(dh, g[None], one, one, 1, -2 * r, False, w, 1).view(n, s_, h, w)
            if "sigma" in needs:  # dL/dg through both passes, then the quotient rule
                dg = P.dtaps(back, hx, one, 2 * r + 1, 1, -2 * r, True)[0]
                dg = dg + P.dtaps(dh, x.view(n * s_, 1, h, w), one, 2 * r + 1, 1, -2 * r, False)[0]
                out["sigma"] = (dg * _math.gauss1d_dsigma(sig, hp["blur_radius"], r)).sum().reshape(t["sigma"].shape)
        if "bias" in needs:
            out["bias"] = dy.sum((0, 2, 3))
        return out


class DauGauss:
    """Dense per-unit Gaussian kernel (torch) applied as ``(2R+1)^2`` integer units of ``shift``."""

    def __init__(self, prims):
        self.P = prims

    @staticmethod
    def _kernel(t, hp):
        sig = t["sigma"] if t["sigma"].dim() == 3 else t["sigma"].reshape(()).expand(t["weight"].shape)
        keep = (-hp["keep"], hp["keep"])  # the centre that reaches the image (_math.centred_reach)
        gk = _math.unit_gaussians(t["mu_x"], t["mu_y"], sig, hp["radius"], keep, keep)
        return torch.einsum("fsk,fsktu->fstu", t["weight"], gk)

    @staticmethod
    def _units(kern, r):
        """Dense kernel ``[F,S,T,T]`` -> ``a4 [F,S,T*T,4]`` (only the floor tap), floors ``[F,S,T*T]``."""
        f_, s_, side, _ = kern.shape
        off = torch.arange(-r, r + 1, device=kern.device)
        fy = off[:, None].expand(side, side).reshape(1, 1, -1).expand(f_, s_, -1)
        fx = off[None, :].expand(side, side).reshape(1, 1, -1).expand(f_, s_, -1)
        a4 = torch.zeros(f_, s_, side * side, 4, dtype=kern.dtype, device=kern.device)
        a4[..., 0] = kern.reshape(f_, s_, -1)
        return a4, _i32(fy), _i32(fx)

    def forward(self, t, hp):
        x, r, st = t["x"].contiguous(), hp["keep"], hp["stride"]
        h, w = x.shape[2:]
        a4, fy, fx = self._units(self._kernel(t, hp), r)
        y = self.P.shift(x, a4, fy, fx, st, _math.out_size(h, st), _math.out_size(w, st))
        return _add_bias(y, t["bias"]), {}

    def backward(self, t, saved, dy, hp, needs):
        x, r, st = t["x"].contiguous(), hp["keep"], hp["stride"]
        s_, h, w = x.shape[1:]
        params = ("weight", "mu_x", "mu_y", "sigma")
        leaves = {k: t[k].detach().requires_grad_(k in needs) for k in params}
        wanted = [k for k in params if k in needs]
        with torch.enable_grad():
            kern = self._kernel(leaves, hp)
        a4, fy, fx = self._units(kern.detach(), r)
        out = {}
        if "x" in needs:
            out["x"] = self.P.scatter(dy, a4, fy, fx, st, s_, h, w)
        if wanted:
            dk = self.P.tapsum(x, dy, fy, fx, st)[..., 0].reshape(kern.shape)
            out.update(zip(wanted, torch.autograd.grad(kern, [leaves[k] for k in wanted], dk)))
        if "bias" in needs:
            out["bias"] = dy.sum((0, 2, 3))
        return out


class Acu:
    """Bilinear samples once per position group and synapse, then 1x1 mixing (ACU Eq. 3-5, 10-14)."""

    def __init__(self, prims):
        self.P = prims

    @staticmethod
    def _geom(t, st):
        """Clamped int32 floors, fractions ``[G,K]`` and the group of each output channel."""
        k_ = t["weight"].shape[2]
        h, w = t["x"].shape[2:]
        fy, ay = _math.bilinear(t["pos_y"].detach().reshape(-1, k_))  # ay, ax: 1-D weights [P,K,2]
        fx, ax = _math.bilinear(t["pos_x"].detach().reshape(-1, k_))
        f_ = t["weight"].shape[0]
        grp = _i32(torch.arange(f_, device=fy.device) // (f_ // fy.shape[0]))
        fy = floors(fy, h, _math.out_size(h, st), st)
        return fy, floors(fx, w, _math.out_size(w, st), st), ay, ax, grp

    def forward(self, t, hp):
        x, weight, st = t["x"].contiguous(), t["weight"], hp["stride"]
        n, s_, h, w = x.shape
        f_, _, k_ = weight.shape
        fy, fx, ay, ax, grp = self._geom(t, st)
        ho, wo = _math.out_size(h, st), _math.out_size(w, st)
        xs = self.P.sample(x, corner_weights(ay, ax).contiguous(), fy, fx, st, ho, wo)
        y = self.P.mix(xs.view(n, fy.shape[0], s_ * k_, ho * wo), weight.reshape(f_, s_ * k_).contiguous(), grp)
        return _add_bias(y.view(n, f_, ho, wo), t["bias"]), {}

    def backward(self, t, saved, dy, hp, needs):
        P, x, weight, st = self.P, t["x"].contiguous(), t["weight"], hp["stride"]
        n, s_, h, w = x.shape
        f_, _, k_ = weight.shape
        fy, fx, ay, ax, grp = self._geom(t, st)
        g_ = fy.shape[0]
        ho, wo = dy.shape[2:]
        a4 = corner_weights(ay, ax).contiguous()
        w2 = weight.reshape(f_, s_ * k_).contiguous()
        dyv = dy.view(n, f_, ho * wo)
        out = {}
        if "weight" in needs:
            xs = P.sample(x, a4, fy, fx, st, ho, wo)
            out["weight"] = P.mix_dw(dyv, xs.view(n, g_, s_ * k_, ho * wo), grp).view(f_, s_, k_)
        pos = bool(needs & {"pos_x", "pos_y"})
        if "x" in needs or pos:
            e = P.mix_t(dyv, w2, grp, g_).view(n, g_, s_, k_, ho, wo)
            if "x" in needs:
                out["x"] = P.sample_t(e, a4, fy, fx, st, h, w)
            if pos:
                gpx, gpy = pos_grads(P.sample_sums(e, x, fy, fx, st), ay, ax)
                out["pos_x"], out["pos_y"] = gpx.reshape(t["pos_x"].shape), gpy.reshape(t["pos_y"].shape)
        if "bias" in needs:
            out["bias"] = dy.sum((0, 2, 3))
        return out


class Njet:
    """Separable Gaussian-derivative responses (columns, then rows), then 1x1 mixing (N-Jet section III)."""

    def __init__(self, prims):
        self.P = prims

    @staticmethod
    def _maps(order, dev):
        """Index tensors of the two passes: columns ``(cin, fil)`` -> M maps, rows -> J basis maps."""
        pairs = _math.njet_pairs(order)
        m = order + 1
        cols = (_i32(torch.zeros(m, device=dev)), _i32(torch.arange(m, device=dev)))
        rows = (
            _i32(torch.tensor([a for a, _ in pairs], device=dev)),
            _i32(torch.tensor([b for _, b in pairs], device=dev)),
        )
        return cols, rows

    def _basis(self, x2, d, cols, rows, r, st):
        """``x2 [NS,1,H,W]`` -> ``(A [NS,M,H,Wo], B [NS,J,Ho,Wo])``."""
        h, w = x2.shape[2:]
        a = self.P.cpass(x2, d, *cols, st, -r, False, _math.out_size(w, st))
        return a, self.P.cpass(a, d, *rows, st, -r, True, _math.out_size(h, st))

    def forward(self, t, hp):
        x, alpha, r, st, order = t["x"].contiguous(), t["alpha"], hp["keep"], hp["stride"], hp["order"]
        n, s_, h, w = x.shape
        f_, _, j_ = alpha.shape
        d = _math.gauss_derivs1d(t["sigma"].detach().reshape(()), hp["radius"], order, r).contiguous()
        cols, rows = self._maps(order, x.device)
        _, b = self._basis(x.view(n * s_, 1, h, w), d, cols, rows, r, st)
        ho, wo = b.shape[2:]
        grp = torch.zeros(f_, dtype=torch.int32, device=x.device)
        y = self.P.mix(b.view(n, 1, s_ * j_, ho * wo), alpha.reshape(f_, s_ * j_).contiguous(), grp)
        return _add_bias(y.view(n, f_, ho, wo), t["bias"]), {}

    def backward(self, t, saved, dy, hp, needs):
        P, x, alpha, sigma = self.P, t["x"].contiguous(), t["alpha"], t["sigma"]
        r, st, order = hp["keep"], hp["stride"], hp["order"]
        n, s_, h, w = x.shape
        f_, _, j_ = alpha.shape
        ho, wo = dy.shape[2:]
        sig = sigma.detach().reshape(()).requires_grad_("sigma" in needs)
        with torch.enable_grad():
            d_graph = _math.gauss_derivs1d(sig, hp["radius"], order, r)
        d = d_graph.detach().contiguous()
        cols, rows = self._maps(order, x.device)
        x2 = x.view(n * s_, 1, h, w)
        dyv = dy.view(n, f_, ho * wo)
        grp = torch.zeros(f_, dtype=torch.int32, device=x.device)
        out = {}
        a = b = None
        if needs & {"alpha", "sigma"}:
            a, b = self._basis(x2, d, cols, rows, r, st)
        if "alpha" in needs:
            out["alpha"] = P.mix_dw(dyv, b.view(n, 1, s_ * j_, ho * wo), grp).view(f_, s_, j_)
        if needs & {"x", "sigma"}:
            db = P.mix_t(dyv, alpha.reshape(f_, s_ * j_).contiguous(), grp, 1).view(n * s_, j_, ho, wo)
            da = P.tpass(db, d, *rows, st, -r, True, h, order + 1)
            if "x" in needs:
                out["x"] = P.tpass(da, d, *cols, st, -r, False, w, 1).view(n, s_, h, w)
            if "sigma" in needs:  # dL/d(filter taps) of both passes, then autograd through the 1-D filters
                gd = torch.zeros_like(d).index_add_(0, rows[1].long(), P.dtaps(db, a, rows[0], 2 * r + 1, st, -r, True))
                gd.index_add_(0, cols[1].long(), P.dtaps(da, x2, cols[0], 2 * r + 1, st, -r, False))
                (gs,) = torch.autograd.grad(d_graph, sig, gd)
                out["sigma"] = gs.reshape(sigma.shape)
        if "bias" in needs:
            out["bias"] = dy.sum((0, 2, 3))
        return out


def ops(prims):
    """The backend interface (``impls.backends``) over the primitives ``prims``: ``OPS`` of a CUDA backend.  Channel
    groups by ``_groups.per_group``: one pass per group, concatenated (correct, not fast)."""
    return {
        "dau": per_group(Dau(prims)),
        "dau_gauss": per_group(DauGauss(prims)),
        "acu": Acu(prims),
        "njet": per_group(Njet(prims)),
    }
