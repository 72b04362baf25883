from flashtts_core.text import normalize_text, split_text, text_length


def test_normalize_collapses_space_and_drops_control_chars():
    assert normalize_text("  Hello\u200b   world\x07 \r\n\n  again ") == "Hello world\nagain"


def test_length_counts_cjk_chars_and_words():
    assert text_length("Hello big world") == 3
    assert text_length("你好世界") == 4
    assert text_length("Hi 你好") == 3


def test_short_text_is_one_segment():
    assert split_text("Hello there. How are you?", length_threshold=50, window_size=50) == ["Hello there. How are you?"]


def test_western_sentences_are_merged_into_windows():
    text = " ".join(f"Sentence number {i} is here." for i in range(20))
    segments = split_text(text, length_threshold=10, window_size=12)
    assert all(text_length(s) <= 12 for s in segments)
    assert " ".join(segments) == text
    assert all(s.endswith(".") for s in segments)


def test_decimal_points_do_not_split():
    segments = split_text("Pi is 3.14 and e is 2.71 roughly. " * 4, length_threshold=5, window_size=8)
    assert any("3.14" in s for s in segments)


def test_chinese_punctuation_splits():
    text = "今天天气很好。我们去公园散步吧！你觉得怎么样？" * 3
    segments = split_text(text, length_threshold=10, window_size=16)
    assert len(segments) > 1
    assert all(text_length(s) <= 16 for s in segments)
    assert "".join(segments) == text


def test_unpunctuated_text_is_hard_split():
    text = "word " * 130
    segments = split_text(text, length_threshold=50, window_size=50)
    assert [text_length(s) for s in segments] == [50, 50, 30]
    chinese = "字" * 120
    assert [len(s) for s in split_text(chinese, 50, 50)] == [50, 50, 20]


def test_empty_text_gives_no_segments():
    assert split_text("   \n ") == []
