import numpy as np
from flashtts_core.crossfade import StreamJoiner, fade_edges, linear_crossfade


def test_joiner_crossfades_overlap_and_preserves_length():
    signal = np.sin(np.linspace(0, 40, 1000)).astype(np.float32)
    # chunks [0:400], [350:700], [650:1000] overlap by 50 samples
    joiner = StreamJoiner(overlap=50)
    out = [joiner.push(signal[0:400]), joiner.push(signal[350:700]), joiner.push(signal[650:1000])]
    out.append(joiner.flush())
    joined = np.concatenate(out)
    assert len(joined) == 1000
    np.testing.assert_allclose(joined, signal, atol=1e-6)  # identical overlaps blend to the same signal


def test_crossfade_ramps():
    mixed = linear_crossfade(np.ones(5, np.float32), np.zeros(5, np.float32))
    assert mixed[0] == 1.0 and mixed[-1] == 0.0 and np.all(np.diff(mixed) < 0)


def test_fade_edges_start_and_end_at_zero():
    x = fade_edges(np.ones(100, np.float32), 10)
    assert x[0] == 0 and x[-1] == 0 and x[50] == 1
