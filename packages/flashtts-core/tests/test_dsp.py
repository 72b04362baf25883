"""The shared Slaney mel filterbank and the old-style weight-norm helpers (Spark's BiCodec, Mega's aligner and WaveVAE).

The reference values were computed from the two engines' own copies before they were merged here, so
a change to the filterbank that would alter what the released checkpoints were trained with fails.
"""

import numpy as np
import pytest
from flashtts_core.dsp import hz_to_mel_slaney, mel_to_hz_slaney, slaney_mel_filterbank

# (n_freqs, f_min, f_max, n_mels, sample_rate) → (shape, sum, sum of squares, bin-weighted sum, nonzeros,
# peak bins of filters 0, 1, 10 and the last, [(bin, filter, value) at the peaks of 4 filters])
REFERENCE = {
    # Mega's aligner (Whisper's 80-mel filterbank at 16 kHz, n_fft 400), as flashtts_mega.aligner.mel_filters
    (201, 0.0, 8000.0, 80, 16000): (
        (201, 80),
        1.9990241056257219,
        0.021185515707693416,
        119.87237204503981,
        391,
        [1, 2, 10, 192],
        [
            (1, 0, 0.02486259490251541),
            (2, 1, 0.022871771827340126),
            (43, 40, 0.014735565520823002),
            (192, 79, 0.0031647116411477327),
        ],
    ),
    # Spark's BiCodec mel_params (16 kHz, n_fft 1024, 10 Hz to Nyquist, 128 mels)
    (513, 10.0, 8000, 128, 16000): (
        (513, 128),
        8.193641171512354,
        0.14185982695323002,
        1264.704887695916,
        1008,
        [2, 4, 17, 500],
        [
            (2, 0, 0.03912476450204849),
            (4, 1, 0.03206522390246391),
            (110, 64, 0.023874033242464066),
            (500, 127, 0.00525736715644598),
        ],
    ),
}


@pytest.mark.parametrize("args", list(REFERENCE))
def test_filterbank_matches_the_engines_previous_output(args):
    shape, total, squares, weighted, nonzeros, argmax, peaks = REFERENCE[args]
    fb = slaney_mel_filterbank(*args)
    f = fb.astype(np.float64)
    assert fb.dtype == np.float32 and fb.shape == shape
    assert f.sum() == pytest.approx(total, rel=1e-9)
    assert (f**2).sum() == pytest.approx(squares, rel=1e-9)
    assert (f * np.arange(shape[0])[:, None]).sum() == pytest.approx(weighted, rel=1e-9)
    assert int((fb > 0).sum()) == nonzeros
    assert fb.argmax(0)[[0, 1, 10, -1]].tolist() == argmax
    for i, m, value in peaks:
        assert fb[i, m] == pytest.approx(value, rel=1e-6)


def test_slaney_scale_is_linear_below_1_khz_and_inverts():
    assert hz_to_mel_slaney(500.0) == pytest.approx(7.5)
    assert hz_to_mel_slaney(1000.0) == pytest.approx(15.0)
    hz = np.array([0.0, 100.0, 999.0, 1000.0, 4000.0, 8000.0])
    assert np.allclose(mel_to_hz_slaney(hz_to_mel_slaney(hz)), hz)


def test_each_filter_has_the_same_area():
    # Slaney normalisation: 2 / bandwidth, so every triangle integrates to 1 over Hz
    fb = slaney_mel_filterbank(2049, 0.0, 8000.0, 40, 16000).astype(np.float64)
    areas = fb.sum(0) * (8000.0 / 2048)
    assert np.allclose(areas, 1.0, rtol=0.02)


def test_weight_norm_builds_the_checkpoints_pair_and_folds_it_exactly():
    torch = pytest.importorskip("torch")
    from flashtts_core.weight_norm import fold_weight_norms, wn_conv1d, wn_conv_transpose1d

    torch.manual_seed(0)
    model = torch.nn.Sequential(wn_conv1d(3, 4, 3, padding=1), wn_conv_transpose1d(4, 2, 4, stride=2))
    assert {"0.weight_g", "0.weight_v", "1.weight_g", "1.weight_v"} <= set(model.state_dict())
    x = torch.randn(1, 3, 10)
    with torch.no_grad():
        before = model(x)
        assert fold_weight_norms(model) == 2
        after = model(x)
    assert "0.weight" in model.state_dict() and "0.weight_g" not in model.state_dict()
    assert torch.allclose(before, after, atol=1e-6)
    assert fold_weight_norms(model) == 0
