"""Backend ``numba``: the papers' efficient algorithms, as layers over the CPU kernels of ``kernels``.

Tensors go to NumPy views and back (no copy for contiguous ones).  The channel mixing of ``acu``
and ``njet`` is a matrix product done by BLAS (``torch.matmul`` on contiguous views),
bit-identical run to run at a fixed thread count; the kernels are bit-identical at any.

MACs (reference/README.md section 8), ``P = N Ho Wo``, ``L = Ho Wo``, ``b = 2 rb + 1`` (blur taps),
``G`` position groups (acu), ``M = order + 1``, ``J`` basis filters, ``w = 2 r + 1`` (njet taps),
``R2 = (2R + 1)^2`` (dau_gauss); ``v`` the block waste of ``_rb_shift`` (outputs rounded up to
whole blocks of ``_RB`` rows x ``_CW`` columns: 1 at the paper case's 32 x 32; for its 36 x 36
input-gradient canvas 1.48 one image at a time, 1.17 with the 8 images laid out across, ``_image_grid``):

- dau forward: blur ``N S (H pw + hp pw) b`` + shift ``4 P F S K v``.
  backward: weight and exact mu share one tap-sum pass ``4 P F S K`` (+ the blur again);
  gauss mu: ``2 x 4 P F S K`` more tap sums on ``x * Dx`` and ``x * Dy`` (+ their blurs);
  x: a gather over ``dy`` at the rotated displacements ``4 N F S K Hb Wb v`` (``Hb, Wb = H, W + 2 rb``)
  + adjoint blur ``N S (H Wb + H W) b``; sigma: shares that gather, then the derivative's two blurs
  met with it in one pass (``_sigma_dots``).
  With every gradient (exact): ``8 P F S K v`` + ``O(N S Hb Wb b)``.  Per-row path: the same counts, ``v = 1``.
- acu forward: interpolate ``4 P S K G`` + 1x1 products ``P F S K`` (GEMM).
  backward: ``P F S K`` (dL/d shifted maps, GEMM) + ``P F S K`` (weight, GEMM) + ``4 P S K G`` (x, adjoint
  of the shift) + ``4 P S K G`` (position corner sums, fused with it) + ``4 P S K G`` (re-interpolate, weight only).
- njet forward: along columns ``N S H Wo M w`` + along rows ``P S J w`` + mixing ``P F S J`` (GEMM).
  backward: alpha ``P F S J`` (GEMM, + the two basis passes again); dL/dbasis ``P F S J`` (GEMM);
  x: ``P S J w + N S H Wo M w``; sigma (filter taps): ``P S J w + N S H Wo M w``.
- dau_gauss forward: ``P F S R2``; backward ``P F S R2`` (x) + ``P F S R2`` (kernel).

Channel groups (``groups = G``) run in the kernels: every ``F S`` above is ``F S/G`` (an output channel's
input loop covers its group's channels), the per-channel passes (blur, basis) keep ``S``; the DAU
window path serves depthwise layers too (its input-gradient gather runs the units transposed within
each group, ``_transpose_units``), and the N-Jet mixing is one batched GEMM over the groups.

Copies that remain: a non-contiguous ``x`` is made contiguous once per pass; ``dau`` copies
``dy`` into the zero-padded layout of the input gradient (``N F Hb Wb v`` elements, images laid out
as a grid where that wastes fewer blocks: ``_image_grid``, ``grid_pack``) and, laid out so, its result back to one
image per plane (``N S Hb Wb``); ``acu`` pads
``x`` by one pixel (``N S (H+2)(W+2)``) and crops its input gradient back (one copy).
Intermediates (recomputed in the backward; dau saves only its units' floors and weights): dau
window ``N S hp pw``; acu shifted maps of one chunk of synapses ``N Kc S Ho Wo <= _BUDGET`` elements
(independent of ``G``); njet ``N S M H Wo`` and ``N S J Ho Wo``.
"""

import numba
import numpy as np
import torch

from ... import _math
from .kernels import (
    active_box,
    _blur_win,
    _blur_win_t,
    _canvas,
    _corr,
    _corr_dk,
    _corr_dx,
    _hblur,
    _hblur_dg,
    _hblur_t,
    _jet_dd,
    _jet_h,
    _jet_h_t,
    _jet_v,
    _jet_v_t,
    _rb_shift,
    _rb_taps,
    _sample,
    _sample_back,
    _scatter,
    _shift,
    _sigma_dots,
    _tapsums,
    _vblur,
    _vblur_dg,
    _vblur_t,
    _CW,
    _RB,
    blocked_window,
    channel_block,
    exact_mu,
    grid_pack,
    sampled,
    unit_coefs,
    unit_lists,
    units,
)


def _np(t):
    """Tensor -> NumPy view (a copy only when ``t`` is not contiguous)."""
    return t.detach().contiguous().numpy()


def _t(a):
    return torch.from_numpy(a)


def _bilinear(my, mx, pad):
    """Floors (+ ``pad``, int64 NumPy) and 1-D weights ``wy, wx [..., 2]`` of displacements."""
    fy, wy = _math.bilinear(my.detach())
    fx, wx = _math.bilinear(mx.detach())
    return _np(fy + pad), _np(fx + pad), wy, wx


def _taps4(wy, wx):
    """Stencil weights ``[..., 4]``, index ``2 da + db`` (four products stacked: the broadcast outer
    product of ``[..., 2]`` pairs ran 2.8x slower, 0.61 against 0.22 ms at ``[192, 64, 2]``)."""
    y0, y1, x0, x1 = wy[..., 0], wy[..., 1], wx[..., 0], wx[..., 1]
    return torch.stack((y0 * x0, y0 * x1, y1 * x0, y1 * x1), -1)


def _add_bias(y, bias):
    if bias is not None:
        y += bias.detach()[None, :, None, None]
    return y


_BUDGET = 2**21  # elements of one chunk of shifted maps (acu): bounds the memory whatever the groups


def _shape_out(x, st):
    return _math.out_size(x.shape[2], st), _math.out_size(x.shape[3], st)


_WASTE = 1.5  # widest window pitch, relative to the output row, that the window (register-blocked) kernels take


def _image_grid(n, hb, wb, gaps, threads):
    """``(mr, mc, pr, pc)``: the input gradient's gather runs over groups of ``m = mr mc`` images
    (``m | N``) laid out ``mr`` down and ``mc`` across, ``pr`` rows and ``pc`` columns apart, when that
    computes fewer ``_RB x _CW`` blocks per image on the busiest of ``threads`` threads than fewer
    images would (an ``Hb x Wb = 36 x 36`` support takes 5 x 3 blocks alone; 8 images across, 38
    apart, take 5 x 19: 11.9 per image against 15, at one thread).  ``pr, pc >= gaps`` keeps every
    read of one image's outputs off its neighbours' ``dy``: each output is the same terms summed in
    the same order as alone.  Ties go to fewer images per group."""
    pr, pc = max(hb, gaps[0]), max(wb, gaps[1])
    best = (0,), (1, 1, pr, pc)  # kept for N <= 1
    for m in range(1, min(n, 16) + 1):
        if n % m:
            continue
        for mr in range(1, m + 1):
            if m % mr:
                continue
            mc = m // mr
            rows, cols = -(-((mr - 1) * pr + hb) // _RB), -(-((mc - 1) * pc + wb) // _CW)
            busiest = -(-(n // m) * rows // threads) * cols  # blocks on the busiest thread
            key = (busiest / n, m, mr)
            if m == 1 or key < best[0]:
                best = key, (mr, mc, pr, pc)
    return best[1]


def _grid_slots(mr, mc, pr, pc):
    """Where image ``i`` of a group (``i = n % m``, ``m = mr mc``) sits: ``(top, left)`` offsets."""
    return [(i // mc * pr, i % mc * pc) for i in range(mr * mc)]


def _wide_window(fy, fx, h, w, ho, wo, rb, st):
    """Window of the register-blocked kernels (the "wide" path) for units with floors ``fy, fx [F,S,K]``, or None.

    None for stride > 1 and when the units' column spread would waste more than ``_WASTE``
    (the per-row kernels run instead).  -> ``(active, y0, y1, x0, x1)``: units whose reads
    meet the blurred image's support ``[-rb, H-1+rb]``, and the range of their floor rows
    ``[y0, y1)`` (``y1`` = largest floor + 1, the lower tap) and columns.
    """
    if st != 1:
        return None
    act, y0, y1, x0, x1, count = active_box(fy, fx, h, w, ho, wo, rb)
    if count and wo + x1 - x0 > _WASTE * wo:
        return None
    return act, int(y0), int(y1), int(x0), int(x1)


def _listed(a, off, plane, s_, hp, ho, wo, pw):
    """``_rb_shift``'s units: coefficients ``[U, 4]``, offsets and starts (``unit_lists`` in blocks of
    ``channel_block`` channels) of the units ``a [F, S/G, K, 4]``, ``off [F, S/G, K]`` over ``S`` input
    channels of ``[hp, pw]`` windows (``plane = hp pw``) and ``[Ho, Wo]`` outputs."""
    start, sk, uoff, _ = unit_lists(off, plane, s_ // off.shape[1], channel_block(hp, ho, wo, pw, a.itemsize))
    return unit_coefs(a, start, sk), uoff, start


def _transpose_units(u, groups):
    """Units ``[F, S/G, K, ...]`` of a layer with ``G`` channel groups -> those of its transpose, ``[S, F/G, K, ...]``
    (input and output channels exchanged within each group): the layer that gathers ``dy`` into the input's
    channels, ``G`` groups again."""
    f_, sg = u.shape[:2]
    g = u.reshape(groups, f_ // groups, sg, *u.shape[2:]).swapaxes(1, 2)
    return np.ascontiguousarray(g.reshape(groups * sg, f_ // groups, *u.shape[2:]))


class _Dau:
    """``dau``: blur each input channel once, then shift per unit (DAU IJCV Eq. 13-14).

    Stride 1 runs the register-blocked kernels: the forward (``_rb_shift``) reads a blurred window
    shaped by ``blocked_window``; the input gradient is the same gather over ``dy`` zero-padded
    likewise, at the rotated displacements (taps flipped, units transposed), onto the blurred
    image's support ``Hb x Wb = (H + 2 rb) x (W + 2 rb)``; the weight and mu gradients are tap sums
    (``_rb_taps``) of ``dy`` against the blurred window.
    """

    def resave(self, t, hp):
        """What the backward takes from the forward: the units' floors ``fy, fx [F,S,K]``, 1-D weights
        ``wy, wx [F,S,K,2]`` and stencil coefficients ``a [F,S,K,4]``, in one pass (``kernels.units``)."""
        shape = t["weight"].shape
        fy, fx, wy, wx, a = units(*(_np(t[k]).reshape(-1) for k in ("mu_y", "mu_x", "weight")))
        fy, fx, wy, wx, a = (_t(v.reshape(*shape, -1)) for v in (fy, fx, wy, wx, a))
        return {"fy": fy[..., 0], "fx": fx[..., 0], "wy": wy, "wx": wx, "a": a}

    @staticmethod
    def _setup(t, hp, saved):
        sig = t["sigma"].detach().reshape(())
        return sig, hp["keep"], saved["fy"].numpy(), saved["fx"].numpy(), saved["wy"], saved["wx"], _np(saved["a"])

    def forward(self, t, hp):
        x, st = _np(t["x"]), hp["stride"]
        saved = self.resave(t, hp)
        sig, r, fy, fx, wy, wx, a = self._setup(t, hp, saved)
        g = _math.gauss1d(sig, hp["blur_radius"], r).numpy()
        (ho, wo), (h, w) = _shape_out(x, st), x.shape[2:]
        # Both paths skip samples that read only zeros (outside the canvas or an inactive unit),
        # dropping weight * 0 terms: a non-finite weight makes its whole output channel
        # non-finite (reference/README.md section 7), so those terms are added back per channel.
        wt = t["weight"].detach()
        nonfinite = None if bool(torch.isfinite(wt).all()) else (0 * wt).sum((1, 2))[None, :, None, None]
        win = _wide_window(fy, fx, h, w, ho, wo, r, st)
        if win is None:
            y = _t(_shift(_canvas(x, g, g, r + 1), a, fy + r + 1, fx + r + 1, st, ho, wo))
            return _add_bias(y if nonfinite is None else y + nonfinite, t["bias"]), saved
        act, y0, y1, x0, x1 = win
        hp, pw = blocked_window(ho, wo, y0, y1, x0, x1)
        c = _blur_win(x, g, g, y0, x0, hp, pw)
        off = np.where(act, (fy - y0) * pw + fx - x0, -1)
        bias = np.zeros(a.shape[0], x.dtype) if t["bias"] is None else _np(t["bias"])
        y = _t(_rb_shift(c, *_listed(a, off, hp * pw, x.shape[1], hp, ho, wo, pw), ho, wo, 1, bias))
        return (y if nonfinite is None else y + nonfinite), saved

    def backward(self, t, saved, dy, hp, needs):
        x, st, dyn = _np(t["x"]), hp["stride"], dy.numpy()
        sig, r, fy, fx, wy, wx, a = self._setup(t, hp, saved)
        w = t["weight"].detach()
        g = _math.gauss1d(sig, hp["blur_radius"], r).numpy()
        (ho, wo), (h, wd) = dy.shape[2:], x.shape[2:]
        win = _wide_window(fy, fx, h, wd, ho, wo, r, st)
        if win is None:
            out = self._backward_rows(x, dyn, sig, r, fy + r + 1, fx + r + 1, wy, wx, a, g, w, hp, needs)
        else:
            out = self._backward_wide(x, dyn, sig, r, fy, fx, wy, wx, a, g, w, hp, needs, win)
        if "sigma" in out:
            out["sigma"] = out["sigma"].reshape(t["sigma"].shape)
        if "bias" in needs:
            out["bias"] = dy.sum((0, 2, 3))
        return out

    @staticmethod
    def _sampled(c, wy, wx):
        """A sample's sum against ``dy`` from corner sums ``c [F,S,K,4]`` (NumPy; ``kernels.sampled``)."""
        return _t(sampled(c.reshape(-1, 4), _np(wy).reshape(-1, 2), _np(wx).reshape(-1, 2)).reshape(wy.shape[:-1]))

    @staticmethod
    def _exact_mu(c, wy, wx, w, out):
        """Bilinear derivative rule, floor fixed (``kernels.exact_mu``; ``c`` NumPy)."""
        gx, gy = exact_mu(c.reshape(-1, 4), _np(wy).reshape(-1, 2), _np(wx).reshape(-1, 2), _np(w).reshape(-1))
        out["mu_x"], out["mu_y"] = _t(gx.reshape(w.shape)), _t(gy.reshape(w.shape))

    def _backward_wide(self, x, dyn, sig, r, fy, fx, wy, wx, a, g, w, hp, needs, win):
        act, y0, y1, x0, x1 = win
        n_, f_, ho, wo = dyn.shape
        h, wd = x.shape[2:]
        out = {}
        if needs & {"weight", "mu_x", "mu_y"}:
            hc, pw = ho + y1 - y0, wo + x1 - x0  # every read of _rb_taps in bounds
            off = np.where(act, (fy - y0) * pw + fx - x0, -1)
            ul = (*unit_lists(off, hc * pw, hp["groups"]), off.shape[2], 1)
            d = np.ascontiguousarray(dyn)
            c = _blur_win(x, g, g, y0, x0, hc, pw)  # recomputed: ~1% of the pass, nothing saved
            cw = _rb_taps(c, d, *ul)
            out["weight"] = self._sampled(cw, wy, wx)
            if hp["mu_grad"] == "exact":
                self._exact_mu(cw, wy, wx, w, out)
            else:  # DAU IJCV Eq. 16: sample x * Dx, x * Dy at the same points
                gd = _math.gauss_dx1d(sig, hp["blur_radius"], r).numpy()
                for name, gr, gc in (("mu_x", g, gd), ("mu_y", gd, g)):
                    if name in needs:
                        cn = _rb_taps(_blur_win(x, gr, gc, y0, x0, hc, pw), d, *ul)
                        out[name] = w * self._sampled(cn, wy, wx)
        if needs & {"x", "sigma"}:
            # dL/d(blurred image) on its support (coordinates -r ...): the forward's gather over dy,
            # zero-padded, at the rotated displacements (taps flipped, units transposed)
            hb, wb = h + 2 * r, wd + 2 * r
            gaps = r + max(h - y0, ho + y1), r + max(wd - x0, wo + x1)
            mr, mc, pr, pc = _image_grid(n_, hb, wb, gaps, numba.get_num_threads())
            slots, m = _grid_slots(mr, mc, pr, pc), mr * mc
            hm, wm = (mr - 1) * pr + hb, (mc - 1) * pc + wb  # a group's supports, laid out as a grid
            hq, wq = blocked_window(hm, wm, y0, y1, x0, x1)
            tops, lefts = (np.array([v[k] for v in slots], np.int64) for k in (0, 1))  # of image n = m (n // m) + i
            dyp = grid_pack(np.ascontiguousarray(dyn), tops + r + y1, lefts + r + x1, hq, wq)
            offb = _transpose_units(np.where(act, (y1 - 1 - fy) * wq + x1 - 1 - fx, -1), hp["groups"])
            ab = _transpose_units(a[..., ::-1], hp["groups"])  # tap (da, db) -> (1 - da, 1 - db)
            listed = _listed(ab, offb, hq * wq, f_, hq, hm, wm, wq)
            back = _rb_shift(dyp, *listed, hm, wm, 1, np.zeros(x.shape[1], x.dtype))
            if m > 1:  # [N/m, S, hm, wm] -> [N, S, Hb, Wb]
                back = np.stack([back[..., t : t + hb, u : u + wb] for t, u in slots], 1)
                back = back.reshape(n_, x.shape[1], hb, wb)  # np.stack made it contiguous: a view
            if "x" in needs:
                out["x"] = _t(_blur_win_t(back, g, g, -r, -r, h, wd))
            if "sigma" in needs:  # <dL/dcanvas, x * dG/dsigma>, dG = outer(dg, g) + outer(g, dg)
                dg = _math.gauss1d_dsigma(sig, hp["blur_radius"], r).numpy()
                out["sigma"] = _t(_sigma_dots(back, x, g, dg, -r, -r)).sum()
        return out

    def _backward_rows(self, x, dyn, sig, r, fy, fx, wy, wx, a, g, w, hp, needs):
        """Stride > 1 or wide spreads: the per-row kernels on the canvas with a ``r + 1`` border."""
        st, pad = hp["stride"], r + 1
        out = {}
        h = _hblur(x, g, pad) if needs & {"weight", "mu_x", "mu_y", "sigma"} else None
        if needs & {"weight", "mu_x", "mu_y"}:
            c = _tapsums(_vblur(h, g, pad), dyn, fy, fx, st)  # [F,S,K,4]
            out["weight"] = self._sampled(c, wy, wx)
            if hp["mu_grad"] == "exact":
                self._exact_mu(c, wy, wx, w, out)
            else:  # DAU IJCV Eq. 16: sample x * Dx, x * Dy at the same points
                gd = _math.gauss_dx1d(sig, hp["blur_radius"], r).numpy()
                if "mu_x" in needs:
                    out["mu_x"] = w * self._sampled(_tapsums(_canvas(x, g, gd, pad), dyn, fy, fx, st), wy, wx)
                if "mu_y" in needs:
                    out["mu_y"] = w * self._sampled(_tapsums(_vblur(h, gd, pad), dyn, fy, fx, st), wy, wx)
        if needs & {"x", "sigma"}:
            # channel groups: _scatter reads them from a's shape [F, S/G, K, 4]
            back = _scatter(dyn, a, fy, fx, st, x.shape[1], x.shape[2] + 2 * pad, x.shape[3] + 2 * pad)
            back_h = _vblur_t(back, g, pad, x.shape[2])  # dL/d(column-blurred x)
            if "x" in needs:
                out["x"] = _t(_hblur_t(back_h, g, pad, x.shape[3]))
            if "sigma" in needs:  # dL/dg through both blur passes, then the quotient rule in g
                dg = _vblur_dg(back, h, r, pad).sum(0) + _hblur_dg(back_h, x, r, pad).sum(0)
                out["sigma"] = (_t(dg) * _math.gauss1d_dsigma(sig, hp["blur_radius"], r)).sum()
        return out


class _Acu:
    """``acu``: per position group and chunk of synapses, one bilinear shift of the input (shared by
    the group's channels), then the 1x1 products as one batched GEMM (BLAS through torch).

    The shifted maps of one chunk, ``[N, Kc, S, Ho, Wo]`` with ``Kc`` set by ``_BUDGET``, are the
    only intermediate: memory does not grow with the number of position groups.
    """

    def _setup(self, t):
        k_ = t["weight"].shape[2]
        fy, fx, wy, wx = _bilinear(t["pos_y"].reshape(-1, k_), t["pos_x"].reshape(-1, k_), 1)
        xp = _np(torch.nn.functional.pad(t["x"].detach(), (1, 1, 1, 1)))  # copy: one zero border
        return xp, fy, fx, wy, wx, _np(_taps4(wy, wx))

    @staticmethod
    def _chunks(n_, s_, f_, k_, g_, l_):
        """``(g, channels of g, chunk of synapses)``; a chunk's shifted maps hold at most ``_BUDGET`` elements."""
        kc, fg = max(1, min(k_, _BUDGET // max(1, n_ * s_ * l_))), f_ // g_
        for g in range(g_):
            for k0 in range(0, k_, kc):
                yield g, slice(g * fg, (g + 1) * fg), slice(k0, min(k0 + kc, k_))

    @staticmethod
    def _weights(weight, fs, ks):
        """``weight[fs, :, ks]`` ordered as the shifted maps' rows ``(k, s)`` -> ``[Fg, Kc S]`` (small copy)."""
        return weight[fs, :, ks].transpose(1, 2).reshape(fs.stop - fs.start, -1)

    def forward(self, t, hp):
        st, weight = hp["stride"], t["weight"].detach()
        xp, fy, fx, wy, wx, a = self._setup(t)
        (n_, s_), (f_, _, k_) = xp.shape[:2], weight.shape
        ho, wo = _shape_out(t["x"], st)
        y = weight.new_zeros(n_, f_, ho * wo)
        if t["bias"] is not None:
            y += t["bias"].detach()[None, :, None]
        buf = None
        for g, fs, ks in self._chunks(n_, s_, f_, k_, fy.shape[0], ho * wo):
            kc = ks.stop - ks.start
            if buf is None:  # the first chunk is the largest
                buf = np.empty(n_ * kc * s_ * ho * wo, xp.dtype)
            xs = buf[: n_ * kc * s_ * ho * wo].reshape(n_, kc, s_, ho, wo)
            _sample(xp, a[g, ks], fy[g, ks], fx[g, ks], st, xs)
            wk = self._weights(weight, fs, ks)
            y[:, fs].baddbmm_(wk.expand(n_, -1, -1), _t(xs).view(n_, kc * s_, ho * wo))
        return y.view(n_, f_, ho, wo), {}

    def backward(self, t, saved, dy, hp, needs):
        st, weight = hp["stride"], t["weight"].detach()
        xp, fy, fx, wy, wx, a = self._setup(t)
        (n_, s_), (f_, _, k_) = xp.shape[:2], weight.shape
        g_, (ho, wo) = fy.shape[0], dy.shape[2:]
        dyv = dy.view(n_, f_, ho * wo)
        pos = bool(needs & {"pos_x", "pos_y"})
        gxp = np.zeros(xp.shape if "x" in needs else (0, 0, 0, 0), xp.dtype)
        gw = weight.new_zeros(weight.shape)
        sums = weight.new_zeros(g_, k_, 4)
        buf = None
        for g, fs, ks in self._chunks(n_, s_, f_, k_, g_, ho * wo):
            kc, dyg = ks.stop - ks.start, dyv[:, fs]
            if buf is None:
                buf = np.empty(n_ * kc * s_ * ho * wo, xp.dtype)
            xs = buf[: n_ * kc * s_ * ho * wo].reshape(n_, kc, s_, ho, wo)
            if "weight" in needs:  # sum_n dy_n xs_n^T: batched GEMM, then a fixed-order sum over n
                _sample(xp, a[g, ks], fy[g, ks], fx[g, ks], st, xs)
                gwk = torch.matmul(dyg, _t(xs).view(n_, kc * s_, ho * wo).transpose(1, 2)).sum(0)
                gw[fs, :, ks] = gwk.view(-1, kc, s_).transpose(1, 2)
            if "x" in needs or pos:  # dL/d(shifted maps) = weight^T dy, then the shift's adjoint
                torch.matmul(self._weights(weight, fs, ks).t(), dyg, out=_t(xs).view(n_, kc * s_, ho * wo))
                part = _sample_back(xp, xs, a[g, ks], fy[g, ks], fx[g, ks], st, gxp, "x" in needs)
                sums[g, ks] = _t(part.sum(0))
        out = {"weight": gw}
        if "x" in needs:
            out["x"] = _t(gxp)[:, :, 1:-1, 1:-1].contiguous()  # copy: crop the border
        if pos:
            c = sums
            gpx = wy[..., 0] * (c[..., 1] - c[..., 0]) + wy[..., 1] * (c[..., 3] - c[..., 2])
            gpy = wx[..., 0] * (c[..., 2] - c[..., 0]) + wx[..., 1] * (c[..., 3] - c[..., 1])
            out["pos_x"], out["pos_y"] = gpx.reshape(t["pos_x"].shape), gpy.reshape(t["pos_y"].shape)
        if "bias" in needs:
            out["bias"] = dy.sum((0, 2, 3))
        return out


class _Njet:
    """``njet``: separable Gaussian-derivative basis (along columns, then along rows, strided), then mixing."""

    def _basis(self, x, d, pairs, st):
        hx = _jet_h(x, d, st, _math.out_size(x.shape[3], st))
        return hx, _jet_v(hx, d, pairs, st, _math.out_size(x.shape[2], st))

    def _setup(self, t, hp):
        sig = t["sigma"].detach().reshape(())
        d = _math.gauss_derivs1d(sig, hp["radius"], hp["order"], hp["keep"])
        pairs = np.array(_math.njet_pairs(hp["order"]), dtype=np.int64).reshape(-1, 2)
        return sig, d, pairs

    def forward(self, t, hp):
        x, st = _np(t["x"]), hp["stride"]
        _, d, pairs = self._setup(t, hp)
        _, b = self._basis(x, _np(d), pairs, st)
        n_, s_, j_, ho, wo = b.shape
        alpha, g_ = t["alpha"].detach(), hp["groups"]
        f_ = alpha.shape[0]
        # per channel group, [F/G, S/G J] x [S/G J, Ho Wo]: one batched GEMM (BLAS)
        y = torch.matmul(alpha.reshape(g_, f_ // g_, -1), _t(b).view(n_, g_, s_ * j_ // g_, ho * wo))
        return _add_bias(y.view(n_, f_, ho, wo), t["bias"]), {}

    def backward(self, t, saved, dy, hp, needs):
        x, st = _np(t["x"]), hp["stride"]
        sig, d, pairs = self._setup(t, hp)
        dn = _np(d)
        alpha, g_ = t["alpha"].detach(), hp["groups"]
        f_, sg, j_ = alpha.shape
        n_, _, ho, wo = dy.shape
        s_, fg = sg * g_, f_ // g_
        dyv = dy.view(n_, g_, fg, ho * wo)  # per channel group (batched GEMMs below)
        out = {}
        hx = b = None
        if needs & {"alpha", "sigma"}:
            hx, b = self._basis(x, dn, pairs, st)
        if "alpha" in needs:
            # sum_n dy_n B_n^T: batched GEMM, then a fixed-order sum over n
            bt = _t(b).view(n_, g_, sg * j_, ho * wo).transpose(2, 3)
            out["alpha"] = torch.matmul(dyv, bt).sum(0).view(f_, sg, j_)
        if needs & {"x", "sigma"}:
            db = torch.matmul(alpha.reshape(g_, fg, -1).transpose(1, 2), dyv).numpy()
            db = np.ascontiguousarray(db).reshape(n_, s_, j_, ho, wo)  # the kernels take C order
            dh = _jet_v_t(db, dn, pairs, st, x.shape[2], d.shape[0])
            if "x" in needs:
                out["x"] = _t(_jet_h_t(dh, dn, st, x.shape[3]))
            if "sigma" in needs:  # dL/d(filter taps) in numba, then autograd through the tiny 1-D filters
                dd = _t(_jet_dd(x, hx, db, dh, pairs, st, d.shape[1]).sum(0))
                s = sig.clone().requires_grad_(True)
                with torch.enable_grad():
                    dg = _math.gauss_derivs1d(s, hp["radius"], hp["order"], hp["keep"])
                    (gs,) = torch.autograd.grad(dg, s, dd)
                out["sigma"] = gs.reshape(t["sigma"].shape)
        if "bias" in needs:
            out["bias"] = dy.sum((0, 2, 3))
        return out


class _DauGauss:
    """``dau_gauss``: dense kernel built in torch, direct correlation in numba."""

    def _kernel(self, t, hp):
        w, mx, my, sg = t["weight"], t["mu_x"], t["mu_y"], t["sigma"]
        sig = sg if sg.dim() == 3 else sg.reshape(()).expand(w.shape)
        keep = (-hp["keep"], hp["keep"])  # the centre that reaches the image (_math.centred_reach)
        kern = torch.einsum("fsk,fsktu->fstu", w, _math.unit_gaussians(mx, my, sig, hp["radius"], keep, keep))
        return _math.flush_subnormal(kern)  # no subnormal stalls (its docstring)

    def forward(self, t, hp):
        x, st = _np(t["x"]), hp["stride"]
        kern = _np(self._kernel({k: v.detach() for k, v in t.items() if v is not None}, hp))
        return _add_bias(_t(_corr(x, kern, st, *_shape_out(x, st))), t["bias"]), {}

    def backward(self, t, saved, dy, hp, needs):
        x, st, dyn = _np(t["x"]), hp["stride"], dy.numpy()
        names = ("weight", "mu_x", "mu_y", "sigma")
        out = {}
        if "x" in needs:
            kern = _np(self._kernel({k: t[k].detach() for k in names}, hp))
            out["x"] = _t(_corr_dx(dyn, kern, st, x.shape[2], x.shape[3], hp["groups"]))
        want = [k for k in names if k in needs]
        if want:  # dL/dkernel in numba, then autograd through the kernel construction
            dk = _t(_corr_dk(x, dyn, hp["keep"], st, hp["groups"]))
            leaves = {k: t[k].detach().requires_grad_(k in want) for k in names}
            with torch.enable_grad():
                grads = torch.autograd.grad(self._kernel(leaves, hp), [leaves[k] for k in want], dk)
            out.update(zip(want, grads))
        if "bias" in needs:
            out["bias"] = dy.sum((0, 2, 3))
        return out


OPS = {"dau": _Dau(), "dau_gauss": _DauGauss(), "acu": _Acu(), "njet": _Njet()}
