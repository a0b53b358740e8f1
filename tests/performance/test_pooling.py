"""Max pooling under autocast runs in the activations' own dtype with the same results."""
import pytest
import torch
import torch.nn.functional as F

from elektronn2.neuromancer.mfp import fragment_pool, pool

CL3D = torch.channels_last_3d


def pooled_and_grad(fn, x):
    x = x.detach().clone().requires_grad_(True)
    with torch.autocast('cpu', torch.bfloat16):
        y = fn(x)
        loss = (y.float() * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum()
    loss.backward()
    return y, x.grad


@pytest.mark.parametrize('shape', [(1, 2, 2), (2, 1, 1), (2, 2, 2)])
def test_bf16_max_pool_equals_autocast_float32_pool(shape):
    torch.manual_seed(0)
    x = torch.randn(2, 6, 4, 8, 10).to(torch.bfloat16).contiguous(memory_format=CL3D)
    expected, expected_grad = pooled_and_grad(lambda t: F.max_pool3d(t, shape), x)
    actual, grad = pooled_and_grad(lambda t: pool(t, shape), x)
    assert expected.dtype == torch.float32     # autocast's own choice on CPU
    assert actual.dtype == torch.bfloat16      # no up-cast, no cast of the gradient back
    assert actual.is_contiguous(memory_format=CL3D)
    torch.testing.assert_close(actual.float(), expected, rtol=0, atol=0)
    torch.testing.assert_close(grad, expected_grad, rtol=0, atol=0)


def test_overlapping_windows_keep_autocast_behaviour():
    x = torch.randn(1, 3, 4, 9, 9).to(torch.bfloat16)
    with torch.autocast('cpu', torch.bfloat16):
        y = pool(x, (1, 3, 3), stride=(1, 2, 2))
    assert y.dtype == torch.float32


def test_float32_and_fragment_pooling_unchanged():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 5, 9, 9)
    torch.testing.assert_close(pool(x, (1, 2, 2)), F.max_pool3d(x, (1, 2, 2)), rtol=0, atol=0)
    with torch.autocast('cpu', torch.bfloat16):
        fragments = fragment_pool(x.to(torch.bfloat16), (1, 2, 2))
    assert fragments.shape == (4, 3, 5, 4, 4) and fragments.dtype == torch.bfloat16


@pytest.mark.parametrize('shape', [(1, 2, 2), (2, 1, 1), (2, 2, 2), (1, 3, 2)])
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('layout', [CL3D, torch.contiguous_format])
def test_fragment_pooling_without_gradients_equals_pooling_each_fragment(shape, dtype, layout):
    torch.manual_seed(0)
    x = torch.randn(2, 5, 7, 11, 9).to(dtype).contiguous(memory_format=layout)
    x[:, :, :, 3:6] = 0.5       # ties
    with_grad = fragment_pool(x.clone().requires_grad_(True), shape)  # pools each window
    with torch.no_grad():
        without = fragment_pool(x, shape)
    assert without.dtype == dtype and without.is_contiguous(memory_format=layout)
    torch.testing.assert_close(without, with_grad.detach(), rtol=0, atol=0)


def test_conv_layer_in_inference_equals_with_gradients():
    """Without gradients, Conv applies relu in place and MFP writes its fragments in place."""
    import elektronn2.neuromancer as nm
    inp = nm.Input((None, 2, 5, 17, 17), 'b,f,z,x,y', name='raw')
    out = nm.Conv(nm.Conv(inp, 4, (1, 3, 3), (1, 2, 2), mfp=True), 3, (2, 3, 3))
    fn = nm.model_manager.getmodel().function([out])
    x = torch.randn(1, 2, 5, 17, 17)
    with_grad = fn(x)[0]
    assert with_grad.requires_grad
    with torch.no_grad():
        inference = fn(x)[0]
    torch.testing.assert_close(inference, with_grad.detach(), rtol=0, atol=0)
