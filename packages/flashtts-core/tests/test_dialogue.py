import pytest
from flashtts_core.dialogue import parse_dialogue
from flashtts_core.errors import InvalidRequest
from flashtts_core.request import Level


def test_tags_with_pitch_and_speed():
    segs = parse_dialogue("<role:female> Hello! <role:male,pitch:high,speed:low> I'm fine. <role:Alice Smith>ok")
    assert [(s.role, s.text, s.pitch, s.speed) for s in segs] == [
        ("female", "Hello!", None, None),
        ("male", "I'm fine.", Level.high, Level.low),
        ("Alice Smith", "ok", None, None),
    ]


def test_tags_are_case_insensitive_and_other_angle_brackets_are_text():
    segs = parse_dialogue("<ROLE:a> 1 < 2 > 0 <Role:b,PITCH:HIGH> yo")
    assert [(s.role, s.text, s.pitch) for s in segs] == [("a", "1 < 2 > 0", None), ("b", "yo", Level.high)]


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("no tags at all", "needs <role:NAME> tags"),
        ("lead <role:a> hi", "before the first"),
        ("<role:a>   <role:b> hi", "has no text"),
        ("<role:> hi", "no name"),
        ("<role:a,pitch:loud> hi", "invalid pitch"),
        ("<role:a,volume:high> hi", "bad option"),
        ("<role:a> hi <role:b yo", "unclosed <role:...> tag"),
        ("<role:a> hi <role:<role:b>> yo", "unclosed <role:...> tag"),
        ("<role:a> hi </role>", "unclosed <role:...> tag"),
    ],
)
def test_errors_name_the_problem(text, fragment):
    with pytest.raises(InvalidRequest) as err:
        parse_dialogue(text)
    assert fragment in err.value.message
    assert err.value.status == 400
