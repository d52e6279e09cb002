"""The nn modules of ``impls.nn`` and their training helpers: shapes, initialisation, moves,
serialisation, torch.compile (fullgraph), and each helper on its own (runs on ``torch-naive``)."""

import math

import pytest
import torch
import torch.nn.functional as tnf

from rfbench import impls
from rfbench.impls import nn as rn

B = "torch-naive"
F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def layers(stride=1, **kw):
    """One module of each kind, 3 -> 4 channels."""
    return {
        "dau": rn.DAUConv2d(3, 4, units=2, stride=stride, backend=B, **kw),
        "dau_learn_sigma": rn.DAUConv2d(
            3, 4, units=3, stride=stride, learn_sigma=True, mu_init="grid", backend=B, **kw
        ),
        "dau_gauss": rn.DAUGaussConv2d(3, 4, units=2, stride=stride, backend=B, **kw),
        "acu": rn.ACUConv2d(3, 4, stride=stride, backend=B, **kw),
        "acu_circle_groups": rn.ACUConv2d(
            3, 4, synapses=5, init="circle", position_groups=2, stride=stride, backend=B, **kw
        ),
        "njet": rn.NJetConv2d(3, 4, order=2, stride=stride, backend=B, **kw),
    }


NAMES = list(layers())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("hw", [(9, 7), (8, 8), (1, 1), (5, 12)])
def test_output_shape_matches_conv2d(name, stride, hw):
    torch.manual_seed(0)
    m = layers(stride)[name]
    x = torch.randn(2, 3, *hw)
    want = tnf.conv2d(x, torch.zeros(4, 3, 3, 3), stride=stride, padding=1).shape
    y = m(x)
    assert y.shape == want == (2, 4, math.ceil(hw[0] / stride), math.ceil(hw[1] / stride))
    y.sum().backward()
    assert all(p.grad is not None for p in m.parameters())


def test_parameter_shapes():
    m = layers()
    assert m["dau"].weight.shape == m["dau"].mu_x.shape == m["dau"].mu_y.shape == (4, 3, 2)
    assert m["dau"].log_sigma.shape == () and not isinstance(m["dau"].log_sigma, torch.nn.Parameter)
    assert isinstance(m["dau_learn_sigma"].log_sigma, torch.nn.Parameter)
    assert m["dau_gauss"].log_sigma.shape == (4, 3, 2) and m["dau_gauss"].sigma.min() > 0
    assert m["acu"].pos_x.shape == (9,) and m["acu"].weight.shape == (4, 3, 9)
    assert m["acu_circle_groups"].pos_y.shape == (2, 5)
    assert m["njet"].alpha.shape == (4, 3, 6) and isinstance(m["njet"].log_sigma, torch.nn.Parameter)


def test_modules_compute_the_functional_api():
    torch.manual_seed(1)
    m = layers()
    x = torch.randn(2, 3, 9, 7)
    d = m["dau_learn_sigma"]
    want = impls.dau_conv2d(x, d.weight, d.mu_x, d.mu_y, d.sigma, d.bias, backend=B)
    torch.testing.assert_close(d(x), want)
    g = m["dau_gauss"]
    want = impls.dau_gauss_conv2d(x, g.weight, g.mu_x, g.mu_y, g.sigma, g.bias, radius=g.radius, backend=B)
    torch.testing.assert_close(g(x), want)
    a = m["acu_circle_groups"]
    torch.testing.assert_close(a(x), impls.acu_conv2d(x, a.weight, a.pos_x, a.pos_y, a.bias, backend=B))
    n = m["njet"]
    torch.testing.assert_close(n(x), impls.njet_conv2d(x, n.alpha, n.sigma, n.bias, order=2, backend=B))


@pytest.mark.parametrize("stride", [1, 2])
def test_acu_grid_init_is_a_3x3_conv2d(stride):
    torch.manual_seed(2)
    a = rn.ACUConv2d(3, 4, stride=stride, backend=B)
    x = torch.randn(2, 3, 9, 7)
    want = tnf.conv2d(x, a.weight.reshape(4, 3, 3, 3), a.bias, stride=stride, padding=1)
    torch.testing.assert_close(a(x), want, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_initialisation():
    torch.manual_seed(3)
    d = rn.DAUConv2d(16, 32, units=4, sigma=0.7, backend=B)
    assert d.mu_x.abs().max() <= 1.5 and d.mu_y.abs().max() <= 1.5 and d.mu_x.std() > 0.5
    bound = math.sqrt(6 / (16 * 4 + 32 * 4))
    assert d.weight.abs().max() <= bound and d.weight.abs().max() > 0.9 * bound
    assert float(d.sigma) == pytest.approx(0.7) and float(d.bias.abs().sum()) == 0
    g = rn.DAUConv2d(2, 2, units=4, mu_init="grid", backend=B)
    assert g.mu_x[0, 0].tolist() == [-1.5, 1.5, -1.5, 1.5] and g.mu_y[1, 1].tolist() == [-1.5, -1.5, 1.5, 1.5]
    a = rn.ACUConv2d(2, 2, backend=B)
    assert a.pos_x.tolist() == [-1, 0, 1] * 3 and a.pos_y.tolist() == [-1] * 3 + [0] * 3 + [1] * 3 and a.center == 4
    c = rn.ACUConv2d(2, 2, synapses=5, init="circle", backend=B)
    assert c.center == 0 and c.pos_x[0] == 0 and c.pos_y[0] == 0
    torch.testing.assert_close(c.pos_x[1:] ** 2 + c.pos_y[1:] ** 2, torch.ones(4))
    n = rn.NJetConv2d(32, 8, order=2, backend=B)
    assert float(n.sigma) == 1.0 and n.alpha.std() == pytest.approx(math.sqrt(2 / (32 * 6)), rel=0.1)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="synapses"):
        rn.ACUConv2d(2, 2, synapses=5)
    with pytest.raises(ValueError, match="position_groups"):
        rn.ACUConv2d(2, 3, position_groups=2)
    with pytest.raises(ValueError, match="sigma"):
        rn.DAUConv2d(2, 2, sigma=0)
    with pytest.raises(ValueError, match="mu_grad"):
        rn.DAUConv2d(2, 2, mu_grad="bilinear")


@pytest.mark.parametrize("name", NAMES)
def test_extra_repr(name):
    m = layers()[name]
    text = repr(m)
    assert type(m).__name__ in text and "3, 4" in text and "backend='torch-naive'" in text


@pytest.mark.parametrize("name", NAMES)
@torch.no_grad()
def test_reset_parameters_restores_the_initialisation(name):
    m = layers()[name]
    for p in m.parameters():
        p.add_(10.0)
    if hasattr(m, "unit_mask"):
        m.unit_mask.fill_(False)
    m.reset_parameters()
    if hasattr(m, "mu_x"):
        assert m.mu_x.abs().max() <= 1.5 and bool(m.unit_mask.all())
        assert torch.allclose(m.sigma, torch.full_like(m.sigma, m.init_sigma))
    if hasattr(m, "pos_x"):
        fresh = rn.ACUConv2d(3, 4, synapses=m.synapses, init=m.init, position_groups=m.position_groups)
        assert torch.equal(m.pos_x, fresh.pos_x) and torch.equal(m.pos_y, fresh.pos_y)
    if hasattr(m, "alpha"):
        assert float(m.sigma) == pytest.approx(1.0) and m.alpha.abs().max() < 5


@pytest.mark.parametrize("name", NAMES)
def test_double_and_to(name):
    torch.manual_seed(4)
    m = layers()[name]
    x = torch.randn(2, 3, 6, 5)
    y = m(x)
    m = m.double().to("cpu")
    assert all(t.dtype == torch.float64 for t in m.parameters())
    assert m.log_sigma.dtype == torch.float64 if hasattr(m, "log_sigma") else True
    if hasattr(m, "unit_mask"):
        assert m.unit_mask.dtype == torch.bool
    y64 = m(x.double())
    assert y64.dtype == torch.float64
    torch.testing.assert_close(y64.float(), y, rtol=1e-4, atol=1e-5)


def test_factory_kwargs():
    m = rn.NJetConv2d(2, 3, dtype=torch.float64, device="cpu", backend=B)
    assert m.alpha.dtype == m.log_sigma.dtype == torch.float64
    assert m(torch.randn(1, 2, 5, 5, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name):
    torch.manual_seed(5)
    a = layers()[name]
    with torch.no_grad():
        for p in a.parameters():
            p.add_(0.1 * torch.randn_like(p))
    torch.manual_seed(6)
    b = layers()[name]
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 7, 6)
    torch.testing.assert_close(b(x), a(x), rtol=0, atol=0)
    assert set(a.state_dict()) == set(b.state_dict())


def _compile_check(m, compile_backend):
    torch.manual_seed(7)
    x = torch.randn(2, 3, 9, 7)
    c = torch.compile(m, backend=compile_backend, fullgraph=True)
    y = c(x)
    y.square().sum().backward()
    got = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    want = m(x)
    want.square().sum().backward()
    torch.testing.assert_close(y, want)
    for g, w in zip(got, [p.grad for p in m.parameters()]):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("name", ["dau_learn_sigma", "dau_gauss", "acu_circle_groups", "njet"])
def test_torch_compile_fullgraph_matches_eager(name):
    """Dynamo (fullgraph: no graph break) + AOT autograd, in this process; every layer is one custom op.
    The fresh-process and inductor checks over every backend are in test_torch_integration.py."""
    torch._dynamo.reset()
    _compile_check(layers()[name], "aot_eager")


# ---------------------------------------------------------------- ACU helpers


def test_normalized_grad():
    g = torch.tensor([[3.0, 0.0, 0.0, -1e-30], [4.0, 0.0, -2.0, 0.0]])
    want = torch.tensor([[0.6, 0.0, 0.0, -1.0], [0.8, 0.0, -1.0, 0.0]])
    torch.testing.assert_close(rn.normalized_grad(g), want)
    g = torch.randn(2, 3, 7)
    n = rn.normalized_grad(g)
    torch.testing.assert_close(n.square().sum(0), torch.ones(3, 7))
    assert torch.equal(torch.sign(n), torch.sign(g))


def test_zero_center():
    g = torch.ones(2, 3, 5)
    out = rn.zero_center(g, 4)
    assert float(out[..., 4].abs().sum()) == 0 and float(out[..., :4].sum()) == 24


@pytest.mark.parametrize("groups", [1, 2])
def test_acu_position_gradient_is_normalised_and_centre_is_zero(groups):
    torch.manual_seed(8)
    a = rn.ACUConv2d(3, 4, position_groups=groups, backend=B)
    with torch.no_grad():
        a.pos_x.add_(0.3 * torch.rand_like(a.pos_x))
        a.pos_y.add_(0.3 * torch.rand_like(a.pos_y))
        a.pos_x[..., a.center] = 0
        a.pos_y[..., a.center] = 0
    x = torch.randn(2, 3, 8, 8)
    a(x).square().sum().backward()
    assert rn.normalize_position_grads(a) == 1
    raw = torch.autograd.grad(
        impls.acu_conv2d(x, a.weight, a.pos_x, a.pos_y, a.bias, backend=B).square().sum(), (a.pos_x, a.pos_y)
    )
    want = rn.zero_center(rn.normalized_grad(torch.stack(raw)), 4)
    torch.testing.assert_close(torch.stack((a.pos_x.grad, a.pos_y.grad)), want)
    norm = (a.pos_x.grad**2 + a.pos_y.grad**2).sqrt()
    assert float(norm[..., 4].abs().sum()) == 0
    torch.testing.assert_close(norm[..., [0, 1, 2, 3, 5, 6, 7, 8]], torch.ones_like(norm[..., :8]))


def test_acu_plain_gradient_when_hook_disabled():
    torch.manual_seed(9)
    a = rn.ACUConv2d(3, 4, fixed_center=False, normalize_grad=False, backend=B)
    x = torch.randn(2, 3, 8, 8)
    a(x).square().sum().backward()
    raw = torch.autograd.grad(
        impls.acu_conv2d(x, a.weight, a.pos_x, a.pos_y, a.bias, backend=B).square().sum(), (a.pos_x, a.pos_y)
    )
    torch.testing.assert_close(a.pos_x.grad, raw[0])
    torch.testing.assert_close(a.pos_y.grad, raw[1])


def _acu_model(**kw):
    """Two ACU layers (one with position groups), float64, positions moved off the grid."""
    torch.manual_seed(12)
    model = torch.nn.Sequential(
        rn.ACUConv2d(3, 4, backend=B, dtype=F64, **kw),
        torch.nn.Tanh(),
        rn.ACUConv2d(4, 2, synapses=5, init="circle", position_groups=2, backend=B, dtype=F64, **kw),
    )
    with torch.no_grad():
        for m in model[::2]:
            m.pos_x.add_(0.4 * torch.rand_like(m.pos_x) - 0.2)
            m.pos_y.add_(0.4 * torch.rand_like(m.pos_y) - 0.2)
    return model


def _position_grads(model):
    acu = [m for m in model.modules() if isinstance(m, rn.ACUConv2d) and m.pos_x.grad is not None]
    return [torch.stack((m.pos_x.grad, m.pos_y.grad)).clone() for m in acu]


def _normalised_bound(x, model, dy):
    """Per synapse, the largest ``|u_a - u_b|`` of two normalised position gradients whose raw gradients
    ``g_a, g_b`` were summed in different orders from the same terms (float64).

    Each raw component is within ``gamma_n sum|terms|`` of the exact sum (harness/metrics.py, item 1), so
    ``|g_a - g_b| <= 2 gamma_n |(A_x, A_y)|`` with ``A`` the reference's ``sum|terms|`` (absolute mode) and
    ``n`` the count of ``metrics.n_terms`` for acu positions (``8 N Ho Wo S F / P`` summands plus 11
    operations). For vectors ``|a/|a| - b/|b|| <= 2 |a - b| / |b|`` (``a/|a| - b/|b| = (a - b)/|b| +
    a (|b| - |a|) / (|a| |b|)``), and computing each quotient (hypot, division) adds at most ``2u`` per
    component, so ``4u`` to the difference of the two. Only the first layer, whose ``dy`` is given."""
    from rfbench.reference import acu as ref

    m = model[0]
    arr = [t.detach().numpy() for t in (x, m.weight, m.pos_x, m.pos_y, m.bias)]
    absg = ref.backward(*arr, dy.numpy(), absolute=True)
    ax, ay = (torch.from_numpy(absg[k]) for k in ("pos_x", "pos_y"))
    n_, s_, h_, w_ = x.shape
    n = 8 * n_ * h_ * w_ * s_ * m.out_channels + 11
    u = 2.0**-53
    return 2 * (2 * n * u / (1 - n * u)) * torch.hypot(ax, ay), 4 * u


def test_accumulated_half_batches_normalise_like_the_full_batch():
    """Fails on the per-backward hook (relative difference ~1: each half was normalised on its own)."""
    model = _acu_model()
    x = torch.randn(6, 3, 7, 9, dtype=F64)
    c = torch.randn(6, 4, 7, 9, dtype=F64)  # loss sum(c * layer-1 output): dy = c, whatever the split
    first = model[0]
    first(x).mul(c).sum().backward()
    rn.normalize_position_grads(first)
    full = _position_grads(first)[0]
    first.zero_grad()
    for part in (slice(0, 3), slice(3, 6)):
        first(x[part]).mul(c[part]).sum().backward()
    rn.normalize_position_grads(first)
    acc = _position_grads(first)[0]
    raw_bound, extra = _normalised_bound(x, model, c)
    gnorm = torch.hypot(*_raw_grads(first, x, c))
    diff = (acc - full).square().sum(0).sqrt()
    assert bool((diff <= 2 * raw_bound / gnorm + extra).all()), float((diff - 2 * raw_bound / gnorm).max())
    torch.testing.assert_close(full.square().sum(0)[..., [0, 1, 2, 3, 5, 6, 7, 8]], torch.ones(8, dtype=F64))


def _raw_grads(m, x, dy):
    pos = torch.autograd.grad(
        impls.acu_conv2d(x, m.weight, m.pos_x, m.pos_y, m.bias, backend=B).mul(dy).sum(), (m.pos_x, m.pos_y)
    )
    return pos[0].detach(), pos[1].detach()


def test_loss_scaling_then_unscaling_normalises_like_no_scaling():
    """AMP's GradScaler (a power-of-two scale, so scaling and unscaling are exact in float64): the
    normalised position gradients equal the unscaled run's bit for bit. Fails on the per-backward hook,
    which normalised the scaled gradient (then unscaled: 1/65536 of the right one)."""
    model = _acu_model()
    x = torch.randn(3, 3, 8, 6, dtype=F64)
    loss = lambda: model(x).square().sum()  # noqa: E731
    loss().backward()
    rn.normalize_position_grads(model)
    want = _position_grads(model)
    model.zero_grad()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=65536.0)
    scaler.scale(loss()).backward()
    scaler.unscale_(opt)
    rn.normalize_position_grads(model)
    for got, ref_ in zip(_position_grads(model), want):
        assert torch.equal(got, ref_)


def test_step_without_normalising_is_refused():
    """A step on raw position gradients is caught at the next forward; accumulation is not."""
    model = _acu_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(2, 3, 6, 6, dtype=F64)
    for _ in range(2):  # two accumulated backwards, then the helper and a step: fine
        model(x).sum().backward()
    assert rn.normalize_position_grads(model) == 2
    opt.step()
    model(x).sum().backward()
    opt.step()  # the helper forgotten
    with pytest.raises(RuntimeError, match=r"normalize_position_grads\(model\).*normalize_grad=False"):
        model(x)
    plain = _acu_model(normalize_grad=False)
    opt = torch.optim.SGD(plain.parameters(), lr=0.1)
    plain(x).sum().backward()
    opt.step()
    plain(x)  # nothing to normalise: no error


@pytest.mark.parametrize("fixed", [True, False])
def test_fixed_centre_stays_at_origin(fixed):
    torch.manual_seed(10)
    a = rn.ACUConv2d(2, 2, synapses=5, init="circle", fixed_center=fixed, backend=B)
    opt = torch.optim.AdamW(a.parameters(), lr=0.1, weight_decay=0.1)
    for _ in range(5):
        opt.zero_grad()
        (a(torch.randn(2, 2, 8, 8)) - 1).square().mean().backward()
        rn.normalize_position_grads(a)
        opt.step()
    moved = float(a.pos_x[0].detach().abs() + a.pos_y[0].detach().abs())
    assert (moved == 0) == fixed


def test_position_warmup():
    torch.manual_seed(11)
    model = torch.nn.Sequential(rn.ACUConv2d(2, 3, backend=B), torch.nn.ReLU(), rn.ACUConv2d(3, 2, backend=B))
    warm = rn.PositionWarmup(model, steps=3)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    start = [p.detach().clone() for m in model[::2] for p in (m.pos_x, m.pos_y)]
    weight0 = model[0].weight.detach().clone()
    for step in range(5):
        assert warm.frozen == (step < 3)
        opt.zero_grad()
        model(torch.randn(2, 2, 8, 8)).square().mean().backward()
        rn.normalize_position_grads(model)
        opt.step()
        warm.step()
        now = [p.detach() for m in model[::2] for p in (m.pos_x, m.pos_y)]
        same = all(torch.equal(a, b) for a, b in zip(start, now))
        assert same == (step < 3)
    assert not torch.equal(weight0, model[0].weight)
    rn.freeze_positions(model)
    assert not model[0].pos_x.requires_grad and model[0].pos_x.grad is None


# ---------------------------------------------------------------- optimiser groups


def test_param_groups():
    model = torch.nn.Sequential(
        rn.DAUConv2d(2, 3, learn_sigma=True, backend=B),
        rn.ACUConv2d(3, 3, backend=B),
        rn.NJetConv2d(3, 2, backend=B),
        torch.nn.Conv2d(2, 2, 1),
    )
    groups = rn.param_groups(model, lr=0.01, mu_lr_factor=50.0, weight_decay=1e-4)
    by = {g["name"]: g for g in groups}
    assert set(by) == {"weights", "displacements", "scales"}
    assert by["displacements"]["lr"] == pytest.approx(0.5) and by["displacements"]["weight_decay"] == 0
    assert by["scales"]["weight_decay"] == 0 and by["weights"]["weight_decay"] == 1e-4
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    disp = {id(p) for p in by["displacements"]["params"]}
    assert disp == {id(model[0].mu_x), id(model[0].mu_y), id(model[1].pos_x), id(model[1].pos_y)}
    assert {id(p) for p in by["scales"]["params"]} == {id(model[0].log_sigma), id(model[2].log_sigma)}
    opt = torch.optim.SGD(groups, lr=0.01)
    assert len(opt.param_groups) == 3
    assert [g["name"] for g in rn.param_groups(torch.nn.Linear(2, 2), lr=1.0)] == ["weights"]


# ---------------------------------------------------------------- N-Jet safe subsampling


@pytest.mark.parametrize(
    "size, sigma, r, want",
    [
        ((32, 32), 1.0, 4, (27, 27)),  # 32 * 2^(-1/4) = 26.9
        ((32, 17), 4.0, 4, (16, 8)),  # halving; 8.5 rounds to even
        ((9, 7), 2.0, 2, (4, 4)),  # 4.5 -> 4 and 3.5 -> 4: Python's round
        ((1, 5), 3.0, 4, (1, 3)),
        ((3, 3), 40.0, 4, (1, 1)),  # never below one pixel
        ((10, 10), 0.0, 4, (10, 10)),
    ],
)
def test_safe_subsample_sizes(size, sigma, r, want):
    y = torch.randn(2, 3, *size)
    out = rn.safe_subsample(y, sigma, r=r)
    assert out.shape == (2, 3, *want)
    torch.testing.assert_close(out, tnf.interpolate(y, size=want, mode="bilinear", align_corners=False))


def test_safe_subsample_takes_the_layer_sigma():
    n = rn.NJetConv2d(2, 2, sigma=2.0, backend=B)
    y = torch.randn(1, 2, 16, 16, requires_grad=True)
    out = rn.safe_subsample(y, n.sigma, r=4)
    assert out.shape[-2:] == (round(16 * 2**-0.5),) * 2
    out.sum().backward()
    assert y.grad is not None


# ---------------------------------------------------------------- DAU pruning


def _pruning_layer():
    d = rn.DAUConv2d(2, 2, units=3, backend=B)
    with torch.no_grad():
        d.weight.copy_(torch.tensor([[[1.0, -0.05, 0.6], [0.2, -0.09, 0.3]], [[-2.0, 0.1, 0.05], [0.7, 0.01, -0.5]]]))
    return d


def test_prune_units_counts_and_zeroes():
    torch.manual_seed(12)
    d = _pruning_layer()
    assert rn.prune_units(d, 0.1) == 5  # |w| < 0.2: -0.05, -0.09, 0.1, 0.05, 0.01
    assert int(d.unit_mask.sum()) == 7 and float(d.weight.detach()[~d.unit_mask].abs().sum()) == 0
    x = torch.randn(2, 2, 7, 7)
    torch.testing.assert_close(d(x), impls.dau_conv2d(x, d.weight, d.mu_x, d.mu_y, d.sigma, d.bias, backend=B))
    assert rn.prune_units(d, 0.1) == 0  # idempotent
    opt = torch.optim.Adam(d.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        d(x).square().mean().backward()
        opt.step()
    assert float(d.weight.detach()[~d.unit_mask].abs().sum()) == 0  # removed units stay removed
    assert rn.prune_units(torch.nn.Sequential(d, torch.nn.ReLU()), 0.0) == 0


def test_prune_units_shrink():
    torch.manual_seed(13)
    d = _pruning_layer()
    x = torch.randn(2, 2, 7, 7)
    assert rn.prune_units(d, 0.1) == 5
    y = d(x)
    assert rn.shrink_units(d) == 1  # slot 1 is removed for every (f, s)
    assert d.units == 2 and d.weight.shape == d.mu_x.shape == d.unit_mask.shape == (2, 2, 2)
    torch.testing.assert_close(d(x), y)
    g = rn.DAUGaussConv2d(2, 2, units=3, backend=B)
    with torch.no_grad():
        g.weight.copy_(_pruning_layer().weight)
    assert rn.prune_units(g, 0.1, shrink=True) == 5 and g.log_sigma.shape == (2, 2, 2)
    assert isinstance(g.log_sigma, torch.nn.Parameter) and "units=2" in repr(g)


def test_learned_sigma_stays_positive():
    d = rn.DAUConv2d(2, 2, learn_sigma=True, backend=B)
    opt = torch.optim.SGD(d.parameters(), lr=1.0)
    d.log_sigma.grad = torch.tensor(30.0)
    opt.step()
    assert float(d.sigma) > 0
    d(torch.randn(1, 2, 5, 5))
