import pytest
from flashtts_core.text import normalize_text, text_length
from flashtts_core.text_stream import IncrementalSplitter


def feed(pieces, **kwargs) -> tuple[list[list[str]], list[str]]:
    """What each push returned, and what flush returned."""
    splitter = IncrementalSplitter(**kwargs)
    return [splitter.push(p) for p in pieces], splitter.flush()


def test_a_sentence_is_emitted_once_whitespace_follows_its_mark():
    pushed, rest = feed(["Hello", " there.", " How", " are you?", " Fine"])
    assert pushed == [[], [], ["Hello there."], [], ["How are you?"]]
    assert rest == ["Fine"]


def test_several_sentences_in_one_piece_come_out_one_by_one():
    pushed, rest = feed(["One. Two! Three? Four"])
    assert pushed == [["One.", "Two!", "Three?"]]
    assert rest == ["Four"]


def test_a_decimal_number_split_across_pieces_stays_whole():
    pushed, rest = feed(["Pi is 3", ".", "14 and e is 2.", "71. Done"])
    assert pushed == [[], [], [], ["Pi is 3.14 and e is 2.71."]]
    assert rest == ["Done"]


def test_abbreviations_and_initials_do_not_end_a_sentence():
    pushed, rest = feed(["Dr. Smith met J. K. Rowling, e.g. at noon. So did I. Then"])
    assert pushed == [["Dr. Smith met J. K. Rowling, e.g. at noon.", "So did I."]]
    assert rest == ["Then"]


def test_closing_quotes_and_brackets_stay_with_their_sentence():
    pushed, rest = feed(['He said "Hi." Then (it ended.) ', "Next"])
    assert pushed == [['He said "Hi."', "Then (it ended.)"], []]
    assert rest == ["Next"]


def test_full_width_marks_need_no_space_but_wait_for_a_closing_quote():
    pushed, rest = feed(["你好。", "」再见！", "好"])
    assert pushed == [[], ["你好。」"], ["再见！"]]
    assert rest == ["好"]


def test_a_line_break_ends_a_segment():
    pushed, rest = feed(["Title\n\nBody text"])
    assert pushed == [["Title"]]
    assert rest == ["Body text"]


def test_clauses_are_cut_only_once_the_buffer_is_long():
    short, rest = feed(["Yes, sure, right away"], clause_threshold=5)
    assert short == [[]] and rest == ["Yes, sure, right away"]
    words = " ".join(f"w{i}" for i in range(6))
    pushed, rest = feed([f"Well, {words}; and", " more"], clause_threshold=5, max_length=20)
    assert pushed == [[f"Well, {words};"], []]
    assert rest == ["and more"]


def test_commas_and_colons_inside_numbers_are_not_clause_ends():
    pushed, rest = feed(["It costs 1,000 dollars at 3:30 today and more words here"], clause_threshold=3)
    assert pushed == [[]]
    assert rest == ["It costs 1,000 dollars at 3:30 today and more words here"]


def test_a_long_unpunctuated_run_is_cut_between_words_never_inside_one():
    splitter = IncrementalSplitter(clause_threshold=3, max_length=4)
    assert splitter.push("alpha beta gamma delta epsi") == ["alpha beta gamma delta"]
    assert splitter.push("lon zeta") == []  # "epsilon" was unfinished; two words are within max_length
    assert splitter.push(" eta theta iota") == ["epsilon zeta eta theta"]
    assert splitter.flush() == ["iota"]
    chinese = IncrementalSplitter(clause_threshold=3, max_length=4)
    assert chinese.push("一二三四五六") == ["一二三四"]
    assert chinese.flush() == ["五六"]


def test_a_clause_cut_keeps_the_segment_within_max_length():
    text = "a, " + " ".join(["w"] * 10) + ", b c"
    pushed, rest = feed([text], clause_threshold=2, max_length=6)
    assert all(text_length(s) <= 6 for s in pushed[0] + rest)
    assert " ".join(pushed[0] + rest) == text


def test_flush_returns_the_rest_and_starts_over():
    splitter = IncrementalSplitter()
    assert splitter.push("Unfinished") == []
    assert splitter.buffered == "Unfinished"
    assert splitter.flush() == ["Unfinished"]
    assert splitter.flush() == [] and splitter.buffered == ""
    assert splitter.push("  \n ") == [] and splitter.flush() == []


@pytest.mark.parametrize(
    "text",
    [
        "Hello there. Pi is 3.14! Is it? Mr. Brown said so.\nNew line here. 今天天气很好。我们去公园吧！好",
        'She asked, "Why?" and left… Then silence. The end.',
    ],
)
def test_character_by_character_gives_the_same_segments_as_one_piece(text):
    one_pushed, one_rest = feed([text])
    by_char, char_rest = feed(list(text))
    segments = [s for batch in by_char for s in batch] + char_rest
    assert segments == one_pushed[0] + one_rest
    assert " ".join(segments).replace(" ", "") == normalize_text(text).replace("\n", "").replace(" ", "")


def test_limits_are_checked():
    with pytest.raises(ValueError):
        IncrementalSplitter(clause_threshold=0)
