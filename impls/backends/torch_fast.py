"""Backend ``torch-fast``: each paper's efficient algorithm in torch ops, hand-written backward.

Every layer is an op of the autograd bridge (``impls._autograd``): ``forward`` runs under
``no_grad`` and ``backward`` computes only the gradients named in ``needs``.  No Python loop
runs over pixels; loops run over small dimensions (synapses, derivative orders) or over
chunks of units that bound the largest temporary to ``_BUDGET`` elements.

Notation of the MAC counts (reference/README.md section 8): ``P = N Ho Wo`` output positions,
``Hc = H + 2 rb``, ``Wc = W + 2 rb`` the blurred canvas of ``dau``, ``M = order + 1``.
A "gather" or "scatter" pass over ``U`` units costs ``4 P U`` MACs (four bilinear taps).
"""

import torch
import torch.nn.functional as tnf

from .. import _math
from .._groups import per_group

_BUDGET = 2**21  # elements of the window buffer: one per call, reused across chunks, small enough to stay in cache


def _add_bias(y, bias):
    return y if bias is None else y + bias[None, :, None, None]


_corners = _math.corner_weights  # 1-D weights [..., 2] of _math.bilinear -> [..., 2, 2] (reference/README.md section 1)
_pos_grads = _math.pos_grads  # corner sums t[..., da, db] = <dL/dsample, a[floor + (da, db)]> -> (d/dx, d/dy)


# ---------------------------------------------------------------- dau (reference/README.md section 2)
#
# Forward (IJCV Eq. 13-14): blur every input channel once on the zero-extended plane, keep the
# whole canvas [N,S,Hc,Wc], then read the four bilinear taps of every unit (f,s,k) as windows
# of the canvas (``_Windows``) and contract them with the unit weights.
#   MACs: blur  N S (Hc W + Hc Wc)(2 rb + 1)   +   taps 4 P F S K
#   (at stride 1 the four taps of a unit share one (Ho+1) x (Wo+1) window: 4 N F S K (Ho+1)(Wo+1)).
# Backward, per requested gradient:
#   weight, mu (exact)   one pass over the same windows against dy               4 P F S K
#   mu (gauss, Eq. 16)   blurs with Dx, Dy                                       2 N S (Hc W + Hc Wc)(2 rb + 1)
#                        + two passes over their windows                         8 P F S K
#   x                    dL/dcanvas by the adjoint: the stride-dilated dy read   4 N F S K (Hc+1)(Wc+1)
#                        at the rotated displacements -mu (same machinery)       (~ 4 P F S K s^2)
#                        + the adjoint blur                                      N S (Hc W + H W)(2 rb + 1)
#   sigma                the same dL/dcanvas, blurs with dG/dsigma                2 N S (Hc W + Hc Wc)(2 rb + 1)
#                        and one dot product with dL/dcanvas                     N S Hc Wc
#   bias                 P F.


def _corr(a, k, dim, full):
    """Correlation of ``a`` with the 1-D kernel ``k`` (``2r+1`` taps, centred) along ``dim``, zero-extended:
    ``full`` -> length ``L + 2r`` (index = coordinate + r), else 'valid' -> ``L - 2r``.

    ``2r+1`` multiply-adds of shifted slices (faster than a one-channel ``conv2d`` on CPU).
    """
    r = k.shape[0] // 2
    if full:
        a = tnf.pad(a, [0, 0] * (a.dim() - 1 - dim) + [2 * r, 2 * r])
    m = a.shape[dim] - 2 * r
    out = a.narrow(dim, 0, m) * k[0]
    for t in range(1, 2 * r + 1):
        out.addcmul_(a.narrow(dim, t, m), k[t])
    return out


def _blur(x, gr, gc):
    """Correlation of the zero-extended ``x [N,S,H,W]`` with ``outer(gr, gc)`` (rows, columns), full extent.

    -> canvas ``[N,S,H+2r,W+2r]`` whose index is the coordinate ``+ r``.
    """
    return _corr(_corr(x, gr, 2, True), gc, 3, True)


def _blur_adjoint(c, g):
    """Adjoint of ``_blur(., g, g)``: ``c [N,S,Hc,Wc]`` -> ``[N,S,Hc-2r,Wc-2r]`` (a 'valid' convolution)."""
    gf = g.flip(0)
    return _corr(_corr(c, gf, 2, False), gf, 3, False)


def _margins(start, size, span):
    """Zero rows needed before/after a plane of ``size`` rows so that windows of ``span`` rows starting
    at ``start`` lie inside; capped at ``span`` (a window entirely outside is moved onto the margin)."""
    lo, hi = int(start.min()), int(start.max()) + span
    return min(max(0, -lo), span), min(max(0, hi - size), span)


class _Windows:
    """Bilinear reads of a stack of planes by many units at once: the gathers of DAU IJCV Eq. 13-14.

    Unit ``u`` of group ``g`` reads plane ``plane[g,u]`` of ``src [B,Hs,Ws,N]`` at rows
    ``r0[g,u] + a + i st`` and columns ``c0[g,u] + b + j st`` (taps ``a, b`` in {0, 1}, ``i < h``,
    ``j < w``); reads outside the plane are zero.  With stride 1 the four taps share one
    ``(h+1) x (w+1)`` window; otherwise each tap has its own ``h x w`` window.  Windows are copied
    with one ``index_select`` of window rows from an overlapping strided view of the padded planes.
    """

    def __init__(self, src, plane, r0, c0, h, w, st):
        _, hs, ws, n = src.shape
        self.g, self.u = plane.shape
        self.h, self.w, self.n, self.st = h, w, n, st
        sh, sw = (h - 1) * st + 2, (w - 1) * st + 2  # rows and columns a unit spans
        top, bottom = _margins(r0, hs, sh)
        left, right = _margins(c0, ws, sw)
        src = tnf.pad(src, (0, 0, left, right, top, bottom))
        hp, wp = hs + top + bottom, ws + left + right
        r0 = r0.clamp(-top, hs + bottom - sh) + top
        c0 = c0.clamp(-left, ws + right - sw) + left
        self.start = (plane * hp + r0) * wp + c0  # window origin, as a row of the view below
        dev = r0.device
        total = src.shape[0] * hp * wp
        if st == 1:  # rows t = 0..h of a (w+1)-column window
            self.rows = torch.arange(h + 1, device=dev) * wp
            self.view = src.as_strided((total - w, (w + 1) * n), (n, 1))
            self.per = (h + 1) * (w + 1) * n  # elements per unit
        else:  # rows (a, b, i): tap (a, b), output row i; w columns st apart
            two = torch.arange(2, device=dev)
            rows = (two[:, None, None] + torch.arange(h, device=dev) * st) * wp + two[:, None]
            self.rows = rows.reshape(-1)
            self.view = src.as_strided((total - (w - 1) * st, w, n), (n, st * n, 1))
            self.per = 4 * h * w * n
        self.buf = None

    def chunks(self):
        """Slices ``(gs, us)`` whose windows hold at most ``_BUDGET`` elements."""
        per = max(1, self.per)
        gc, uc = (max(1, _BUDGET // (per * self.u)), self.u) if per * self.u <= _BUDGET else (1, max(1, _BUDGET // per))
        for g0 in range(0, self.g, gc):
            for u0 in range(0, self.u, uc):
                yield slice(g0, min(g0 + gc, self.g)), slice(u0, min(u0 + uc, self.u))

    def read(self, gs, us):
        """Windows of a chunk -> ``[Gc, Uc, per]``, in a buffer that the next read overwrites."""
        idx = self.start[gs, us][..., None] + self.rows
        m = idx.shape[0] * idx.shape[1] * self.per
        if self.buf is None or self.buf.numel() < m:  # the first chunk is the largest
            self.buf = self.view.new_empty(m)
        out = self.buf[:m].view((idx.numel(),) + self.view.shape[1:])
        torch.index_select(self.view, 0, idx.reshape(-1), out=out)
        return out.view(idx.shape[0], idx.shape[1], self.per)

    def sum(self, coef):
        """``out[g,i,j,n] = sum_{u,a,b} coef[g,u,a,b] src[tap]`` for ``coef [G,U,2,2]`` -> ``[G,h,w,N]``."""
        h, w, n = self.h, self.w, self.n
        out = coef.new_zeros(self.g, h, w, n)
        for gs, us in self.chunks():
            v = self.read(gs, us)
            c = coef[gs, us]
            gc, uc = c.shape[:2]
            if self.st == 1:  # all four taps in one product, then shifted sums (small)
                z = torch.bmm(c.reshape(gc, uc, 4).transpose(1, 2), v).view(gc, 2, 2, h + 1, w + 1, n)
                for a in (0, 1):
                    for b in (0, 1):
                        out[gs] += z[:, a, b, a : a + h, b : b + w]
            else:
                out[gs] += torch.bmm(c.reshape(gc, 1, uc * 4), v.view(gc, uc * 4, h * w * n)).view(gc, h, w, n)
        return out

    def dot(self, d):
        """Corner sums ``t[g,u,a,b] = sum_{i,j,n} d[g,i,j,n] src[tap]`` for ``d [G,h,w,N]`` -> ``[G,U,2,2]``."""
        h, w, n = self.h, self.w, self.n
        t = d.new_zeros(self.g, self.u, 2, 2)
        if self.st == 1:  # d placed at each tap's offset inside the (h+1) x (w+1) window
            d = torch.stack([tnf.pad(d, (0, 0, b, 1 - b, a, 1 - a)) for a in (0, 1) for b in (0, 1)], 1)
            d = d.view(self.g, 4, self.per)
        else:
            d = d.reshape(self.g, 1, h * w * n)
        for gs, us in self.chunks():
            v = self.read(gs, us)
            gc, uc = v.shape[:2]
            if self.st == 1:
                t[gs, us] = torch.bmm(v, d[gs].transpose(1, 2)).view(gc, uc, 2, 2)
            else:
                t[gs, us] = torch.bmm(v.view(gc, uc * 4, h * w * n), d[gs].transpose(1, 2)).view(gc, uc, 2, 2)
        return t


def _by_input(a, s_):
    """Per-unit values ``[F, S K]`` (or ``[F,S,K]``) regrouped by input channel -> ``[S, F K]``."""
    f_ = a.shape[0]
    return a.reshape(f_, s_, -1).transpose(0, 1).reshape(s_, -1)


def _planes(a):
    """``[N,C,H,W]`` -> ``[C,H,W,N]`` (contiguous): the layout ``_Windows`` reads."""
    return a.permute(1, 2, 3, 0).contiguous()


class _Dau:
    """Blur once, then bilinear window reads of the canvas (DAU IJCV Eq. 13-14, 16)."""

    @staticmethod
    def units(t, hp):
        """Floors and 1-D bilinear weights of the displacements, and the canvas windows' origins ``[F, S K]``."""
        fy, ay = _math.bilinear(t["mu_y"].detach())  # ay, ax: 1-D weights [F,S,K,2]
        fx, ax = _math.bilinear(t["mu_x"].detach())
        f_, s_, k_ = fy.shape
        plane = torch.arange(s_, device=fy.device)[:, None].expand(f_, s_, k_).reshape(f_, s_ * k_)
        r = hp["keep"]
        return ay, ax, plane, (fy + r).reshape(f_, -1), (fx + r).reshape(f_, -1)

    @staticmethod
    def forward(t, hp):
        x, weight = t["x"], t["weight"]
        r, st = hp["keep"], hp["stride"]
        ho, wo = _math.out_size(x.shape[2], st), _math.out_size(x.shape[3], st)
        g = _math.gauss1d(t["sigma"].reshape(()), hp["blur_radius"], r)
        canvas = _planes(_blur(x, g, g))
        ay, ax, plane, r0, c0 = _Dau.units(t, hp)
        coef = (weight[..., None, None] * _corners(ay, ax)).reshape(r0.shape + (2, 2))
        y = _Windows(canvas, plane, r0, c0, ho, wo, st).sum(coef)
        return _add_bias(y.permute(3, 0, 1, 2).contiguous(), t["bias"]), {"canvas": canvas}

    @staticmethod
    def backward(t, saved, dy, hp, needs):
        x, weight, sigma = t["x"], t["weight"], t["sigma"]
        sig = sigma.reshape(())
        r, st = hp["keep"], hp["stride"]
        f_, s_, k_ = weight.shape
        ho, wo = dy.shape[2:]
        g = _math.gauss1d(sig, hp["blur_radius"], r)
        ay, ax, plane, r0, c0 = _Dau.units(t, hp)
        wc = _corners(ay, ax)
        dyp = _planes(dy)  # [F,Ho,Wo,N]
        mus = needs & {"mu_x", "mu_y"}
        gauss = hp["mu_grad"] == "gauss"
        out = {}
        # Corner sums of the canvas against dy: weight and exact mu gradients.
        if "weight" in needs or (mus and not gauss):
            tc = _Windows(saved["canvas"], plane, r0, c0, ho, wo, st).dot(dyp).view(f_, s_, k_, 2, 2)
            out["weight"] = (tc * wc).sum((-2, -1))
            if mus and not gauss:
                gx, gy = _pos_grads(tc, ay, ax)
                out["mu_x"], out["mu_y"] = weight * gx, weight * gy
        # Eq. 16: the same reads of x * Dx and x * Dy, Dx(t,u) = g(t) gd(u), Dy(t,u) = gd(t) g(u).
        if mus and gauss:
            gd = _math.gauss_dx1d(sig, hp["blur_radius"], r)
            for name, c in (("mu_x", _blur(x, g, gd)), ("mu_y", _blur(x, gd, g))):
                tc = _Windows(_planes(c), plane, r0, c0, ho, wo, st).dot(dyp).view(f_, s_, k_, 2, 2)
                out[name] = weight * (tc * wc).sum((-2, -1))
        # dL/dcanvas: the adjoint reads the stride-dilated dy at the rotated displacements,
        # back[q] = sum_{f,k,a,b} coef[f,s,k,a,b] dyd[q - floor(mu) - rb - (a,b)]  (taps flipped).
        if needs & {"x", "sigma"}:
            hc, wc_ = x.shape[2] + 2 * r, x.shape[3] + 2 * r
            dyd = dyp.new_zeros(f_, (ho - 1) * st + 1, (wo - 1) * st + 1, dy.shape[0])
            dyd[:, ::st, ::st] = dyp
            coef = (weight[..., None, None] * wc).flip(-2, -1).transpose(0, 1).reshape(s_, f_ * k_, 2, 2)
            planes = torch.arange(f_, device=dy.device)[:, None, None].expand(f_, s_, k_)
            rot = [_by_input(a, s_) for a in (planes, -1 - r0, -1 - c0)]
            back = _Windows(dyd, *rot, hc, wc_, 1).sum(coef)
            back = back.permute(3, 0, 1, 2)  # [N,S,Hc,Wc]
            if "x" in needs:
                out["x"] = _blur_adjoint(back, g).contiguous()
            if "sigma" in needs:
                dg = _math.gauss1d_dsigma(sig, hp["blur_radius"], r)
                cs = _blur(x, dg, g) + _blur(x, g, dg)  # x * dG/dsigma, dG = outer(dg, g) + outer(g, dg)
                out["sigma"] = (back * cs).sum().reshape(sigma.shape)
        if "bias" in needs:
            out["bias"] = dy.sum((0, 2, 3))
        return out


# ---------------------------------------------------------------- dau_gauss (reference/README.md section 3)
#
# Per-unit scales make the unit Gaussians non-separable, so there is no blur to share: the
# dense kernel W = sum_k weight Gk is built ([F,S,2R+1,2R+1], F S K (2R+1)^2 MACs) and applied
# with conv2d.  Backward by hand: dx = conv2d_input, dW = conv2d_weight, and the small chain
# dW -> (weight, mu_x, mu_y, sigma) by torch.autograd.grad through the kernel construction.
#   MACs: forward P F S (2R+1)^2;  backward 2 P F S (2R+1)^2 + F S K (2R+1)^2.


def _pad(x, r, stride):
    """Zero-pad ``x`` so that a stride-``stride`` valid correlation with a ``2r+1`` kernel gives ``Ho x Wo``.

    -> ``(xp, pads)``; pads may be negative (rows no output reads are cropped).
    """
    h, w = x.shape[2:]
    bottom = (_math.out_size(h, stride) - 1) * stride + r + 1 - h
    right = (_math.out_size(w, stride) - 1) * stride + r + 1 - w
    pads = (r, right, r, bottom)
    return tnf.pad(x, pads), pads


def _gauss_kernel(weight, mu_x, mu_y, sigma, radius, keep):
    """The dense kernel's centre ``|t|, |u| <= keep`` (``_math.centred_reach``)."""
    sig = sigma if sigma.dim() == 3 else sigma.reshape(()).expand(weight.shape)
    gk = _math.unit_gaussians(mu_x, mu_y, sig, radius, (-keep, keep), (-keep, keep))
    return _math.flush_subnormal(torch.einsum("fsk,fsktu->fstu", weight, gk))


class _DauGauss:
    """Dense per-unit Gaussian kernel + conv2d; hand-written conv backward."""

    @staticmethod
    def forward(t, hp):
        kern = _gauss_kernel(t["weight"], t["mu_x"], t["mu_y"], t["sigma"], hp["radius"], hp["keep"])
        xp, _ = _pad(t["x"], hp["keep"], hp["stride"])
        return _add_bias(tnf.conv2d(xp, kern, stride=hp["stride"]), t["bias"]), {}

    @staticmethod
    def backward(t, saved, dy, hp, needs):
        params = ("weight", "mu_x", "mu_y", "sigma")
        leaves = {n: t[n].detach().requires_grad_(n in needs) for n in params}
        wanted = [n for n in params if n in needs]
        with torch.enable_grad():
            kern = _gauss_kernel(*leaves.values(), hp["radius"], hp["keep"])
        xp, pads = _pad(t["x"], hp["keep"], hp["stride"])
        out = {}
        if "x" in needs:
            gxp = torch.nn.grad.conv2d_input(xp.shape, kern.detach(), dy, stride=hp["stride"])
            out["x"] = tnf.pad(gxp, [-p for p in pads])
        if wanted:
            dk = torch.nn.grad.conv2d_weight(xp, kern.shape, dy, stride=hp["stride"])
            out.update(zip(wanted, torch.autograd.grad(kern, [leaves[n] for n in wanted], dk)))
        if "bias" in needs:
            out["bias"] = dy.sum((0, 2, 3))
        return out


# ---------------------------------------------------------------- acu (reference/README.md section 4)
#
# Forward (ACU Eq. 3-5): per position group g and synapse k, bilinear-shift the input once
# (four integer shifts, X_gk [N,S,Ho,Wo], shared by the group's Fg channels), then one matmul
# with the weights over (k, s) per chunk of synapses (the chunk's X is at most _BUDGET elements).
#   MACs: forward 4 P S K Pg (interpolate) + P F S K (products).
# Backward (ACU Eq. 10-14), per group and chunk of synapses:
#   dX = weight^T dy                                               P F S K   (x or positions)
#   weight: recompute X, then dy X^T                               4 P S K Pg + P F S K
#   x: the four shifts' adjoints of dX_gk                          4 P S K Pg
#   positions: four corner sums <dX_gk, shifted x> per synapse     4 P S K Pg
#   bias: P F.


def _span(n, o, st, m):
    """Outputs ``i < m`` with ``0 <= i st + o < n`` -> ``(output slice, input slice)`` or None."""
    i0 = max(0, -(o // st))
    i1 = min(m, (n - 1 - o) // st + 1)
    if i1 <= i0:
        return None
    return slice(i0, i1), slice(i0 * st + o, (i1 - 1) * st + o + 1, st)


def _regions(x, oy, ox, st, ho, wo):
    """Where output ``(i, j)`` reads ``x[i st + oy, j st + ox]`` inside the image -> ``(out_idx, in_idx)`` or None."""
    sy, sx = _span(x.shape[2], oy, st, ho), _span(x.shape[3], ox, st, wo)
    if sy is None or sx is None:
        return None
    return (Ellipsis, sy[0], sx[0]), (Ellipsis, sy[1], sx[1])


def _sample(out, x, oy, ox, w, st):
    """Writes the bilinear samples ``x<i st + oy + ay, j st + ox + ax>`` (corner weights ``w [2,2]``)
    into the zeroed ``out [N,S,Ho,Wo]``."""
    for da in (0, 1):
        for db in (0, 1):
            reg = _regions(x, oy + da, ox + db, st, out.shape[2], out.shape[3])
            if reg is not None:
                out[reg[0]].addcmul_(x[reg[1]], w[da, db])


def _sample_adjoint(gx, d, oy, ox, w, st):
    """Adds the adjoint of ``_sample`` applied to ``d [N,S,Ho,Wo]`` into ``gx [N,S,H,W]`` (in place)."""
    for da in (0, 1):
        for db in (0, 1):
            reg = _regions(gx, oy + da, ox + db, st, d.shape[2], d.shape[3])
            if reg is not None:
                gx[reg[1]].addcmul_(d[reg[0]], w[da, db])


def _corner_sums(x, d, oy, ox, st):
    """``t[da, db] = <d, x shifted by (oy + da, ox + db)>`` -> ``[2, 2]``."""
    t = d.new_zeros(2, 2)
    for da in (0, 1):
        for db in (0, 1):
            reg = _regions(x, oy + da, ox + db, st, d.shape[2], d.shape[3])
            if reg is not None:
                t[da, db] = (d[reg[0]] * x[reg[1]]).sum()
    return t


class _AcuGeometry:
    """Sizes, position floors (ints) and corner weights of an ``acu`` run, and its blocks of synapses."""

    def __init__(self, t, hp):
        x, weight = t["x"], t["weight"]
        self.n, self.s, h, w = x.shape
        self.f, _, self.k = weight.shape
        self.st = hp["stride"]
        self.ho, self.wo = _math.out_size(h, self.st), _math.out_size(w, self.st)
        px, py = t["pos_x"].reshape(-1, self.k), t["pos_y"].reshape(-1, self.k)
        fy, self.ay = _math.bilinear(py.detach())  # ay, ax: 1-D weights [Pg,K,2]
        fx, self.ax = _math.bilinear(px.detach())
        self.fy, self.fx = fy.tolist(), fx.tolist()
        self.wc = _corners(self.ay, self.ax)  # [Pg,K,2,2]
        self.fg = self.f // len(self.fy)

    def blocks(self):
        """``(g, fs, ks)``: position group, its output channels, a chunk of synapses."""
        kc = max(1, min(self.k, _BUDGET // max(1, self.n * self.s * self.ho * self.wo)))
        for g in range(len(self.fy)):
            for k0 in range(0, self.k, kc):
                yield g, slice(g * self.fg, (g + 1) * self.fg), range(k0, min(k0 + kc, self.k))

    def shifted(self, x, g, ks):
        """``X [N, kc, S, Ho, Wo]``: the bilinear shifts of x by the chunk's synapses."""
        xs = x.new_zeros(self.n, len(ks), self.s, self.ho, self.wo)
        for i, k in enumerate(ks):
            _sample(xs[:, i], x, self.fy[g][k], self.fx[g][k], self.wc[g, k], self.st)
        return xs


class _Acu:
    """Shift once per synapse, then 1x1 products (ACU Eq. 3-5, 10-14)."""

    @staticmethod
    def forward(t, hp):
        op, x, weight = _AcuGeometry(t, hp), t["x"], t["weight"]
        p = op.ho * op.wo
        y = x.new_zeros(op.n, op.f, p)
        for g, fs, ks in op.blocks():
            xs = op.shifted(x, g, ks).view(op.n, len(ks) * op.s, p)
            wk = weight[fs, :, ks.start : ks.stop].transpose(1, 2).reshape(op.fg, len(ks) * op.s)
            y[:, fs] += torch.matmul(wk, xs)
        return _add_bias(y.view(op.n, op.f, op.ho, op.wo), t["bias"]), {}

    @staticmethod
    def backward(t, saved, dy, hp, needs):
        op, x, weight = _AcuGeometry(t, hp), t["x"], t["weight"]
        n, s_, p = op.n, op.s, op.ho * op.wo
        pos = bool(needs & {"pos_x", "pos_y"})
        gx = x.new_zeros(x.shape) if "x" in needs else None
        gw = weight.new_zeros(weight.shape) if "weight" in needs else None
        sums = x.new_zeros(len(op.fy), op.k, 2, 2)
        for g, fs, ks in op.blocks():
            kc, kk = len(ks), slice(ks.start, ks.stop)
            dyg = dy[:, fs].reshape(n, op.fg, p)
            if gw is not None:
                xs = op.shifted(x, g, ks).view(n, kc * s_, p)
                # sum_n dy_n xs_n^T: one batched product on the contiguous views, a fixed-order sum over n
                gw[fs, :, kk] = torch.matmul(dyg, xs.transpose(1, 2)).sum(0).view(op.fg, kc, s_).transpose(1, 2)
            if gx is None and not pos:
                continue
            wk = weight[fs, :, kk].transpose(1, 2).reshape(op.fg, kc * s_)
            dxs = torch.matmul(wk.t(), dyg).view(n, kc, s_, op.ho, op.wo)
            for i, k in enumerate(ks):
                oy, ox = op.fy[g][k], op.fx[g][k]
                if gx is not None:
                    _sample_adjoint(gx, dxs[:, i], oy, ox, op.wc[g, k], op.st)
                if pos:
                    sums[g, k] = _corner_sums(x, dxs[:, i], oy, ox, op.st)
        out = {"x": gx, "weight": gw}
        if pos:
            gpx, gpy = _pos_grads(sums, op.ay, op.ax)
            out["pos_x"], out["pos_y"] = gpx.reshape(t["pos_x"].shape), gpy.reshape(t["pos_y"].shape)
        if "bias" in needs:
            out["bias"] = dy.sum((0, 2, 3))
        return {k: v for k, v in out.items() if k in needs}


# ---------------------------------------------------------------- njet (reference/README.md section 5)
#
# Separable basis responses: the M = order+1 1-D derivative filters d_m along x (columns,
# column stride applied) give A [N,S,M,H,Wo]; along y (rows, row stride applied) each A_a gives
# B_(a,b) for b <= order - a: the J basis responses [N,S,J,Ho,Wo]; then a 1x1 mixing with alpha.
# Each 1-D filter is 2r+1 multiply-adds of strided slices (``_Taps``).
#   MACs: forward N S M H Wo (2r+1) + P S J (2r+1) + P F S J.
# Backward:
#   dB = alpha^T dy                                      P F S J       (x or sigma)
#   alpha: recompute A and B, then dy . B                N S M H Wo (2r+1) + P S J (2r+1) + P F S J
#   x: transposed row then column filters                P S J (2r+1) + N S M H Wo (2r+1)
#   sigma: filter-tap gradients dL/dd_m (row taps on A,  P S J (2r+1) + N S M H Wo (2r+1)
#          column taps on x; A recomputed: + N S M H Wo (2r+1)),
#          then d_m -> sigma by autograd on the (order+1) x (2r+1) taps.
#   bias: P F.


class _Taps:
    """Strided 1-D correlation along ``dim`` (negative: counted from the end) on the zero-extended axis:
    ``out[j] = sum_t k[t] a[j st + t]``, ``|t| <= r``, ``j < m``; its adjoint and its gradient in the taps."""

    def __init__(self, a, dim, r, st, m):
        self.dim, self.r, self.st, self.m, self.size = dim, r, st, m, a.shape[dim]
        after = max(0, (m - 1) * st + r + 1 - self.size)
        self.ap = tnf.pad(a, [0, 0] * (-1 - dim) + [r, after])  # index = coordinate + r

    def tap(self, a, t):
        """Elements ``t, t + st, ...`` (``m`` of them) of the padded ``a`` along ``dim``."""
        idx = [slice(None)] * a.dim()
        idx[self.dim] = slice(t, t + (self.m - 1) * self.st + 1, self.st)
        return a[tuple(idx)]

    def apply(self, k, src=None):
        """Correlation of the padded input (or of the padded-shape ``src``) with ``k [2r+1]``."""
        a = self.ap if src is None else src
        out = self.tap(a, 0) * k[0]
        for t in range(1, 2 * self.r + 1):
            out.addcmul_(self.tap(a, t), k[t])
        return out

    def adjoint(self, g, k, acc):
        """Adds the adjoint of ``apply`` on ``g`` into ``acc`` (padded shape)."""
        for t in range(2 * self.r + 1):
            self.tap(acc, t).addcmul_(g, k[t])

    def dtaps(self, g, src=None):
        """``dL/dk[t] = <g, tap t of the padded input>`` -> ``[2r+1]``."""
        a = self.ap if src is None else src
        return torch.stack([(g * self.tap(a, t)).sum() for t in range(2 * self.r + 1)])

    def crop(self, acc):
        """Padded-shape ``acc`` -> the input's extent."""
        return acc.narrow(self.dim, self.r, self.size)


class _Njet:
    """Separable Gaussian-derivative basis responses, then 1x1 mixing (N-Jet section III)."""

    @staticmethod
    def basis(x, d, hp):
        """``A [N,S,M,H,Wo]`` (with its row ``_Taps``) and ``B [N,S,J,Ho,Wo]``."""
        r, st, order = hp["keep"], hp["stride"], hp["order"]
        h, w = x.shape[2:]
        cols = _Taps(x, -1, r, st, _math.out_size(w, st))
        a = torch.stack([cols.apply(d[i]) for i in range(order + 1)], 2)
        rows = _Taps(a, -2, r, st, _math.out_size(h, st))
        b = torch.stack([rows.apply(d[j], rows.ap[:, :, i]) for i, j in _math.njet_pairs(order)], 2)
        return cols, rows, b

    @staticmethod
    def forward(t, hp):
        x, alpha = t["x"].contiguous(), t["alpha"]  # copy only for a strided x (channels_last)
        n, s_ = x.shape[:2]
        f_, _, j_ = alpha.shape
        d = _math.gauss_derivs1d(t["sigma"].reshape(()), hp["radius"], hp["order"], hp["keep"])
        b = _Njet.basis(x, d, hp)[2]
        ho, wo = b.shape[3:]
        y = torch.matmul(alpha.reshape(f_, s_ * j_), b.reshape(n, s_ * j_, ho * wo))
        return _add_bias(y.view(n, f_, ho, wo), t["bias"]), {}

    @staticmethod
    def backward(t, saved, dy, hp, needs):
        x, alpha, sigma = t["x"].contiguous(), t["alpha"], t["sigma"]  # copy only for a strided x
        n, s_ = x.shape[:2]
        f_, _, j_ = alpha.shape
        ho, wo = dy.shape[2:]
        r, order = hp["keep"], hp["order"]
        sig = sigma.detach().reshape(()).requires_grad_("sigma" in needs)
        with torch.enable_grad():
            d_graph = _math.gauss_derivs1d(sig, hp["radius"], order, r)
        d = d_graph.detach()
        dyv = dy.view(n, f_, ho * wo)
        cols, rows, b = _Njet.basis(x, d, hp)
        out = {}
        if "alpha" in needs:
            # sum_n dy_n B_n^T: one batched product on the contiguous views, a fixed-order sum over n
            out["alpha"] = torch.matmul(dyv, b.reshape(n, s_ * j_, ho * wo).transpose(1, 2)).sum(0).view(f_, s_, j_)
        if needs & {"x", "sigma"}:
            db = torch.matmul(alpha.reshape(f_, s_ * j_).t(), dyv).view(n, s_, j_, ho, wo)
            gd = torch.zeros_like(d)
            dap = torch.zeros_like(rows.ap)  # dL/dA, padded along rows
            for jj, (i, j) in enumerate(_math.njet_pairs(order)):
                rows.adjoint(db[:, :, jj], d[j], dap[:, :, i])
                if "sigma" in needs:
                    gd[j] += rows.dtaps(db[:, :, jj], rows.ap[:, :, i])
            da = rows.crop(dap)  # [N,S,M,H,Wo]
            if "x" in needs:
                dxp = torch.zeros_like(cols.ap)
                for i in range(order + 1):
                    cols.adjoint(da[:, :, i], d[i], dxp)
                out["x"] = cols.crop(dxp).contiguous()
            if "sigma" in needs:
                for i in range(order + 1):
                    gd[i] += cols.dtaps(da[:, :, i])
                (gs,) = torch.autograd.grad(d_graph, sig, gd)
                out["sigma"] = gs.reshape(sigma.shape)
        if "bias" in needs:
            out["bias"] = dy.sum((0, 2, 3))
        return out


# Channel groups by ``_groups.per_group``: one pass per group, concatenated (correct, not fast).
OPS = {"dau": per_group(_Dau), "dau_gauss": per_group(_DauGauss), "acu": _Acu, "njet": per_group(_Njet)}
