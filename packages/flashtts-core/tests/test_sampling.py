import pytest
from flashtts_core.errors import InvalidRequest
from flashtts_core.request import Level, SynthesisRequest
from flashtts_core.sampling import SamplingOverrides, SamplingParams


def test_overrides_apply_only_given_fields():
    base = SamplingParams(temperature=0.8, top_k=50, stop_token_ids=(1,))
    out = base.with_overrides(SamplingOverrides(temperature=0.3, max_tokens=10), allowed_token_ids=[5, 6])
    assert (out.temperature, out.top_k, out.max_tokens, out.allowed_token_ids, out.stop_token_ids) == (
        0.3,
        50,
        10,
        (5, 6),
        (1,),
    )


@pytest.mark.parametrize(
    "bad", [dict(temperature=-1), dict(top_p=0), dict(top_p=1.5), dict(max_tokens=0), dict(repetition_penalty=0)]
)
def test_bad_values_are_400(bad):
    with pytest.raises(InvalidRequest):
        SamplingOverrides(**bad)


def test_request_validation():
    with pytest.raises(InvalidRequest):
        SynthesisRequest(text="   ")
    with pytest.raises(InvalidRequest) as err:
        SynthesisRequest(text="hi", pitch="loud")
    assert "very_low" in err.value.message
    assert SynthesisRequest(text="hi", speed="HIGH").speed is Level.high


@pytest.mark.parametrize(
    "ratio, level",
    [(0.25, "very_low"), (0.5, "very_low"), (0.8, "low"), (1.0, "moderate"), (2.5, "high"), (4.0, "very_high")],
)
def test_openai_speed_mapping(ratio, level):
    assert Level.from_ratio(ratio).value == level


def test_vanishing_temperature_is_greedy_for_every_backend():
    assert SamplingParams(temperature=1e-300).temperature == 0.0
    assert SamplingParams().with_overrides(SamplingOverrides(temperature=5e-4)).temperature == 0.0
    assert SamplingParams(temperature=0.002).temperature == 0.002
