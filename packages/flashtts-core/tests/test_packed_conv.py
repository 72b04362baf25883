"""flashtts_core.packed_conv: the channels-last and polyphase forms compute the original layers."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def _channels_last(x):
    return x.unsqueeze(2).contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(
    "kernel,stride,padding,output_padding",
    # BiCodec's (16,8,4) (11,5,3) (8,4,2) (4,2,1); MegaTTS3's WaveVAE (10,5,3,1) (10,4,3,0) (10,3,4,1); others
    [
        (16, 8, 4, 0),
        (11, 5, 3, 0),
        (8, 4, 2, 0),
        (4, 2, 1, 0),
        (10, 5, 3, 1),
        (10, 4, 3, 0),
        (10, 3, 4, 1),
        (7, 3, 2, 0),
        (3, 3, 0, 0),
        (5, 2, 0, 1),
    ],
)
def test_polyphase_equals_transposed_convolution(kernel, stride, padding, output_padding):
    from flashtts_core.packed_conv import PolyphaseConvTranspose1d

    torch.manual_seed(kernel * 10 + stride)
    conv = torch.nn.ConvTranspose1d(6, 5, kernel, stride=stride, padding=padding, output_padding=output_padding)
    x = torch.randn(3, 6, 17)
    with torch.inference_mode():
        expected = conv(x)
        out = PolyphaseConvTranspose1d(conv)(_channels_last(x)).squeeze(2)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5 * float(expected.abs().max()))


@pytest.mark.parametrize("dilation,padding,stride", [(1, 3, 1), (3, 9, 1), (5, 0, 1), (1, 1, 2)])
def test_packed_conv_equals_conv1d(dilation, padding, stride):
    from flashtts_core.packed_conv import PackedConv1d

    torch.manual_seed(dilation)
    conv = torch.nn.Conv1d(6, 4, 7, stride=stride, padding=padding, dilation=dilation)
    x = torch.randn(2, 6, 40)
    with torch.inference_mode():
        expected = conv(x)
        out = PackedConv1d(conv)(_channels_last(x)).squeeze(2)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5 * float(expected.abs().max()))


def test_packing_refuses_what_it_does_not_compute():
    from flashtts_core.packed_conv import PackedConv1d, PolyphaseConvTranspose1d

    with pytest.raises(ValueError, match="groups 1"):
        PolyphaseConvTranspose1d(torch.nn.ConvTranspose1d(4, 4, 4, stride=2, groups=2))
    with pytest.raises(ValueError, match="output_padding reaches past"):
        # kernel 2 = stride: one tap, no room for an extra sample past the last full one
        PolyphaseConvTranspose1d(torch.nn.ConvTranspose1d(4, 4, 2, stride=2, output_padding=1))
    with pytest.raises(ValueError, match="zero-padded"):
        PackedConv1d(torch.nn.Conv1d(4, 4, 3, padding=1, padding_mode="reflect"))
