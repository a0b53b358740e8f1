"""The convolution replacements equal F.conv in values and gradients (and keep the layout)."""
import pytest
import torch
import torch.nn.functional as F

from elektronn2.neuromancer.conv_paths import convolve, pointwise_conv, z_folded_conv, z_packed_conv
from elektronn2.neuromancer.execution import is_channels_last

CL = {4: torch.channels_last, 5: torch.channels_last_3d}
PLAIN = {4: F.conv2d, 5: F.conv3d}


def values_and_grads(fn, x, w, b):
    x, w, b = (t.detach().clone().requires_grad_(True) for t in (x, w, b))
    y = fn(x, w, b)
    (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
    return y.detach(), x.grad, w.grad, b.grad


def assert_same_as_plain(fn, x, w, b, padding=0):
    expected = values_and_grads(lambda *a: PLAIN[x.ndim](*a, padding=padding), x, w, b)
    actual = values_and_grads(fn, x, w, b)
    for name, e, a in zip(('output', 'grad x', 'grad w', 'grad b'), expected, actual):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5, msg=name)
    return actual[0]


@pytest.mark.parametrize('ndim', [4, 5])
@pytest.mark.parametrize('layout', ['contiguous', 'channels_last'])
def test_pointwise_conv_is_a_matrix_product(ndim, layout):
    torch.manual_seed(0)
    x = torch.randn(2, 7, *(3, 5, 6)[5 - ndim:])
    if layout == 'channels_last':
        x = x.contiguous(memory_format=CL[ndim])
    w, b = torch.randn(4, 7, *[1] * (ndim - 2)), torch.randn(4)
    y = assert_same_as_plain(pointwise_conv, x, w, b)
    assert is_channels_last(y)     # features innermost: the product's natural layout


@pytest.mark.parametrize('padding', [0, 'same', (0, 2, 1)])
def test_z_folded_conv_is_a_3d_conv(padding):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 9, 8).contiguous(memory_format=torch.channels_last_3d)
    w, b = torch.randn(5, 3, 1, 3, 3), torch.randn(5)
    y = assert_same_as_plain(lambda *a: z_folded_conv(*a, padding=padding), x, w, b, padding)
    assert is_channels_last(y)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize('kernel, padding', [((3, 3, 3), 'same'), ((3, 3, 3), 0), ((2, 3, 3), 0),
                                             ((5, 1, 3), 'same'), ((3, 3, 2), 'same'),
                                             ((3, 3, 3), 2), ((3, 2, 3), (1, 0, 2)),
                                             ((3, 3, 3), 'valid'), ((2, 3, 3), 'same')])
def test_z_packed_conv_is_a_3d_conv(kernel, padding):
    """Few output features: the z taps packed into the features, summed with their shifts."""
    torch.manual_seed(0)
    x = torch.randn(2, 5, 6, 9, 8).contiguous(memory_format=torch.channels_last_3d)
    w, b = torch.randn(2, 5, *kernel), torch.randn(2)
    y = assert_same_as_plain(lambda *a: z_packed_conv(*a, padding=padding), x, w, b, padding)
    assert is_channels_last(y)


@pytest.mark.parametrize('kernel', [(1, 1, 1), (1, 3, 3), (2, 3, 3)])
@pytest.mark.parametrize('layout', ['contiguous', 'channels_last'])
def test_convolve_equals_conv3d_for_every_kernel_and_layout(kernel, layout):
    torch.manual_seed(0)
    x = torch.randn(1, 4, 5, 10, 11)
    if layout == 'channels_last':
        x = x.contiguous(memory_format=torch.channels_last_3d)
    w, b = torch.randn(6, 4, *kernel), torch.randn(6)
    assert_same_as_plain(convolve, x, w, b)


def test_single_feature_input_is_not_taken_for_channels_last():
    x = torch.randn(1, 1, 3, 8, 8)  # as contiguous as channels-last, features not innermost
    assert not is_channels_last(x)
    assert is_channels_last(torch.randn(1, 2, 3, 8, 8).contiguous(memory_format=torch.channels_last_3d))


@pytest.mark.parametrize('kernel, in_features, bf16, expected', [
    ((1, 1, 1), 4, False, 'pointwise'), ((1, 3, 3), 4, False, 'z-folded'),
    ((1, 3, 3), 1, False, 'z-folded'), ((2, 3, 3), 4, False, 'z-packed'),
    ((3, 3, 3), 4, False, 'z-packed'), ((3, 3, 3), 6, False, 'plain'),
    ((1, 1, 1), 4, True, 'pointwise'), ((1, 3, 3), 4, True, 'z-folded'),
    ((1, 3, 3), 1, True, 'z-folded'), ((2, 3, 3), 4, True, 'plain')])
def test_convolve_uses_a_replacement_only_where_it_measured_faster(monkeypatch, kernel,
                                                                    in_features, bf16, expected):
    """The rule from benchmarks/bench_conv_paths.py (CPU, channels-last input): the
    pointwise and z-folded replacements in every precision, the z-packed one in float32
    (see conv_paths' docstring)."""
    from elektronn2.neuromancer import conv_paths
    used = []
    for name, kind in (('pointwise_conv', 'pointwise'), ('z_folded_conv', 'z-folded'),
                       ('z_packed_conv', 'z-packed')):
        original = getattr(conv_paths, name)
        monkeypatch.setattr(conv_paths, name,
                            lambda *a, _o=original, _k=kind, **kw: used.append(_k) or _o(*a, **kw))
    x = torch.randn(1, in_features, 3, 8, 8).clone(memory_format=torch.channels_last_3d)
    n_out = 5 if in_features < 6 else 6     # 5 x 3 z taps fill 16 features, 6 x 3 not
    w = torch.randn(n_out, in_features, *kernel).clone(memory_format=torch.channels_last_3d)
    with torch.autocast('cpu', torch.bfloat16, enabled=bf16):
        conv_paths.convolve(x, w, None)
    assert used[:1] == ([] if expected == 'plain' else [expected])


@pytest.mark.parametrize('shape, padding, kernel', [
    ((1, 16, 2, 64, 48), 'same', (3, 1, 5)), ((1, 8, 40, 2, 70), 'same', (3, 1, 5)),
    ((1, 4, 3, 64, 100), (1, 0, 2), (3, 1, 5)), ((1, 3, 4, 30, 20), 'same', (2, 3, 4)),
    ((1, 2, 5, 30, 20), 1, (3, 3, 3)), ((1, 2, 5, 30, 20), 'valid', (3, 3, 3))])
@pytest.mark.parametrize('layout', ['contiguous', 'channels_last'])
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_thin_single_example_convolutions_avoid_the_native_kernel(monkeypatch, shape, padding,
                                                                   kernel, layout):
    """ATen runs a float32 3-D convolution of one example with N*C*D*H <= 20480 on its slow
    native kernel; convolve calls oneDNN for it: same values and grads, layout kept."""
    from elektronn2.neuromancer import conv_paths
    used = []
    original = conv_paths.onednn_conv
    monkeypatch.setattr(conv_paths, 'onednn_conv',
                        lambda *a, **kw: used.append(1) or original(*a, **kw))
    torch.manual_seed(0)
    x = torch.randn(*shape)
    if layout == 'channels_last':
        x = x.clone(memory_format=torch.channels_last_3d)
    # 9 features: too many for the z-packed path (9 x kz > 16)
    w, b = torch.randn(9, shape[1], *kernel), torch.randn(9)
    expected = values_and_grads(lambda *a: F.conv3d(*a, padding=padding), x, w, b)
    actual = values_and_grads(lambda *a: conv_paths.convolve(*a, padding=padding), x, w, b)
    for name, e, a in zip(('output', 'grad x', 'grad w', 'grad b'), expected, actual):
        # sums of up to 10^4 products, in another order: float32 rounding of their scale
        torch.testing.assert_close(a, e, rtol=0, atol=1e-5 * float(e.abs().max()), msg=name)
    assert used
    assert is_channels_last(actual[0]) == (layout == 'channels_last')
    used.clear()
    conv_paths.convolve(torch.randn(2, *shape[1:]), w, b, padding)     # a batch: oneDNN anyway
    assert not used


def test_one_feature_channels_last_input_keeps_its_output_channels_last():
    """A window's first layer (one feature in): oneDNN's output is channels-last, so the
    next layer needs no layout copy."""
    torch.manual_seed(0)
    x = torch.randn(1, 1, 8, 32, 32).clone(memory_format=torch.channels_last_3d)
    w = torch.randn(4, 1, 3, 3, 3)
    y = convolve(x, w, None, 'same')
    assert is_channels_last(y)
    torch.testing.assert_close(y, F.conv3d(x, w, None, padding='same'))
