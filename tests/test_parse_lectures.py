"""Lecture parsers (SRT, WebVTT, plain transcripts) on committed fixtures and files made in tmp_path."""

import shutil
from pathlib import Path

import pytest

from memory_pipeline.errors import ParseError
from memory_pipeline.records import Kind, sha256_bytes, stable_id
from memory_pipeline.sources import parse_file
from memory_pipeline.sources.subtitles import MAX_SEGMENT_SECONDS, parse_srt, parse_vtt, speaker_names
from memory_pipeline.sources.transcript import parse_transcript

FIXTURES = Path(__file__).parent / "fixtures" / "lectures"


def _one(parser, path: Path):
    docs = list(parser(path))
    assert len(docs) == 1
    doc = docs[0]
    assert doc.kind is Kind.LECTURE and doc.content_hash and doc.segments
    return doc


def _rows(doc):
    return [(s.start, s.end, s.speaker, s.text) for s in doc.segments]


def _srt(cues: list[tuple[float, float, str]]) -> str:
    def stamp(seconds: float) -> str:
        ms = round(seconds * 1000)
        return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"

    return "\n".join(f"{i}\n{stamp(a)} --> {stamp(b)}\n{text}\n" for i, (a, b, text) in enumerate(cues, 1))


# --- SRT ---------------------------------------------------------------------------------------


def test_srt_speakers_turns_and_formatting_tags():
    doc = _one(parse_srt, FIXTURES / "coach_talk.srt")
    assert doc.format == "srt" and doc.title == "coach talk"
    assert _rows(doc) == [
        (1.0, 8.0, "COACH", "Today we talk about pacing. The first half should feel easy."),
        (8.2, 11.0, "ANNA", "How easy is easy?"),
        (11.5, 15.0, "COACH", "You should be able to talk. Full sentences, not single words."),
        (15.2, 15.823, None, "Like now?"),
        (15.823, 17.0, None, "Exactly like now."),
        (25.0, 29.0, None, "Later the coach returns to the long run."),
    ]
    assert not any(mark in doc.body_text() for mark in ("<", ">", "{\\", "COACH:"))


def test_srt_rolling_captions_keep_each_sentence_once():
    doc = _one(parse_srt, FIXTURES / "rolling.srt")
    assert _rows(doc) == [
        (
            0.0,
            11.0,
            None,
            "welcome to the lecture on marathon pacing today we look at the negative split "
            "and why the first half should be slower than the second half of the race",
        )
    ]


def test_srt_growing_rolling_line_is_not_repeated(tmp_path):
    path = tmp_path / "growing.srt"
    path.write_text(
        _srt(
            [
                (0, 1, "the negative split is"),
                (1, 2, "the negative split is the pacing of records"),
                (2, 3, "the negative split is the pacing of records\nin the marathon"),
            ]
        ),
        encoding="utf-8",
    )
    assert _one(parse_srt, path).segments[0].text == "the negative split is the pacing of records in the marathon"


def test_short_repeats_are_speech_not_rolling_captions(tmp_path):
    path = tmp_path / "answers.srt"
    path.write_text(_srt([(0, 1, "Да."), (1, 2, "Да."), (2, 3, "Нет.")]), encoding="utf-8")
    assert _one(parse_srt, path).segments[0].text == "Да. Да. Нет."


def test_srt_turns_split_at_long_gaps_and_a_minute_of_speech(tmp_path):
    cues = [(i * 3.0, i * 3.0 + 3.0, f"Sentence number {i}.") for i in range(30)]
    cues.append((200.0, 203.0, "After a pause."))
    path = tmp_path / "long_monologue.srt"
    path.write_text(_srt(cues), encoding="utf-8")
    doc = _one(parse_srt, path)
    assert [(s.start, s.end) for s in doc.segments] == [(0.0, 60.0), (60.0, 90.0), (200.0, 203.0)]
    assert all(s.end - s.start <= MAX_SEGMENT_SECONDS for s in doc.segments)
    assert " ".join(s.text for s in doc.segments[:2]) == " ".join(f"Sentence number {i}." for i in range(30))


def test_malformed_srt_names_file_and_library_reason():
    with pytest.raises(ParseError) as caught:
        list(parse_srt(FIXTURES / "malformed.srt"))
    assert caught.value.path.endswith("malformed.srt")
    assert caught.value.reason.startswith("malformed SRT near line 5") and "00:00:0x,000" in caught.value.reason


def test_text_that_is_not_srt_is_malformed(tmp_path):
    path = tmp_path / "notes.srt"
    path.write_text("These are my notes, not subtitles.\n", encoding="utf-8")
    with pytest.raises(ParseError, match=r"notes\.srt: malformed SRT near line 1"):
        list(parse_srt(path))


@pytest.mark.parametrize("name", ["no_cues.srt", "no_cues.vtt"])
def test_subtitles_without_cues(name):
    with pytest.raises(ParseError, match=rf"{name.replace('.', '[.]')}: no subtitle cues"):
        list(parse_file(FIXTURES / name, Kind.LECTURE))


def test_binary_file_with_srt_extension_names_the_file():
    with pytest.raises(ParseError) as caught:
        list(parse_file(FIXTURES / "binary.srt", Kind.LECTURE))
    assert caught.value.path.endswith("binary.srt") and "binary" in caught.value.reason


def test_empty_subtitle_file_is_refused_by_parse_file(tmp_path):
    path = tmp_path / "empty.vtt"
    path.write_bytes(b"")
    with pytest.raises(ParseError, match=r"empty\.vtt: empty file"):
        list(parse_file(path, Kind.LECTURE))


def test_doc_id_is_by_content(tmp_path):
    source = FIXTURES / "coach_talk.srt"
    moved = tmp_path / "renamed.srt"
    shutil.copy(source, moved)
    assert (
        _one(parse_srt, moved).doc_id
        == _one(parse_srt, source).doc_id
        == stable_id("srt", sha256_bytes(source.read_bytes()))
    )


# --- WebVTT ------------------------------------------------------------------------------------


def test_vtt_voice_tags_header_title_notes_and_styles():
    doc = _one(parse_vtt, FIXTURES / "interval_qa.vtt")
    assert doc.format == "vtt" and doc.title == "Interval training Q&A"
    assert _rows(doc) == [
        (0.0, 7.0, "Coach", "Intervals build your top-end speed. Do them once a week, never twice."),
        (7.5, 10.0, "Anna", "What about recovery between reps?"),
        (10.5, 14.0, "Coach", "Jog half the rep's time. Enough & no more."),
    ]
    body = doc.body_text()
    assert "Recorded at the club meeting" not in body and "::cue" not in body and "intro" not in body


def test_vtt_youtube_auto_captions_lose_word_timings_and_repeats():
    doc = _one(parse_vtt, FIXTURES / "youtube_auto.vtt")
    assert doc.title == "youtube auto" and doc.language == "ru"
    assert _rows(doc) == [
        (0.0, 8.0, None, "сегодня мы говорим о пульсовых зонах вторая зона это лёгкий бег в котором строится база")
    ]


def test_malformed_vtt_names_file_and_library_reason(tmp_path):
    with pytest.raises(ParseError, match=r"malformed\.vtt: malformed WebVTT: Invalid cue block"):
        list(parse_vtt(FIXTURES / "malformed.vtt"))
    headerless = tmp_path / "headerless.vtt"
    headerless.write_text("00:00:01.000 --> 00:00:02.000\nNo header.\n", encoding="utf-8")
    with pytest.raises(ParseError, match=r"headerless\.vtt: malformed WebVTT: Invalid format"):
        list(parse_vtt(headerless))


# --- Plain transcripts -------------------------------------------------------------------------


def test_timed_transcript_marks_speakers_and_title():
    doc = _one(parse_transcript, FIXTURES / "timed_transcript.txt")
    assert doc.format == "transcript" and doc.title == "Лекция о восстановлении"
    assert _rows(doc) == [
        (0.0, 12.0, "Лектор", "Добрый день. Сегодня говорим о восстановлении."),
        (12.0, 65.0, "Лектор", "Сон — главный инструмент. Без сна тренировки не работают."),
        (65.0, 70.0, "Студент", "А сколько нужно спать?"),
        (70.0, 3723.0, "Лектор", "Не меньше восьми часов."),
        (3723.0, None, "Лектор", "На этом всё, спасибо."),
    ]


def test_transcript_with_windows_line_ends_parses_the_same(tmp_path):
    source = FIXTURES / "timed_transcript.txt"
    crlf = tmp_path / "timed_transcript.txt"
    crlf.write_bytes(source.read_bytes().replace(b"\n", b"\r\n"))
    original, windows = _one(parse_transcript, source), _one(parse_transcript, crlf)
    assert (windows.title, _rows(windows)) == (original.title, _rows(original))


def test_transcript_with_marks_is_detected_without_a_kind():
    assert next(parse_file(FIXTURES / "timed_transcript.txt")).format == "transcript"


def test_untimed_transcript_paragraphs_become_segments_without_times():
    doc = next(parse_file(FIXTURES / "untimed_transcript.txt", Kind.LECTURE))
    assert doc.format == "transcript" and doc.title == "untimed transcript"
    assert _rows(doc) == [
        (None, None, "Coach", "Welcome to the strength session for runners."),
        (None, None, "Coach", "We start with squats and lunges."),
        (None, None, "Anna", "Why strength work for runners?"),
        (None, None, "Coach", "It prevents injuries and improves economy."),
    ]


def test_transcript_without_speakers_and_with_a_preamble(tmp_path):
    path = tmp_path / "hill_session.txt"
    path.write_text(
        "Recorded on the track.\n[00:05] Warm up first.\n[00:40]\nThen six hill repeats.\n", encoding="utf-8"
    )
    doc = _one(parse_transcript, path)
    assert doc.title == "hill session"
    assert _rows(doc) == [
        (None, None, None, "Recorded on the track."),
        (5.0, 40.0, None, "Warm up first."),
        (40.0, None, None, "Then six hill repeats."),
    ]


def test_transcript_with_only_a_title_has_no_text(tmp_path):
    path = tmp_path / "title_only.txt"
    path.write_text("Title: Nothing recorded\n\n", encoding="utf-8")
    with pytest.raises(ParseError, match=r"title_only\.txt: no transcript text"):
        list(parse_transcript(path))


def test_cp1251_transcript_is_decoded(tmp_path):
    path = tmp_path / "лекция.txt"
    path.write_bytes("[00:01] Лектор: Пульс во второй зоне.\n[00:09] Лектор: Это лёгкий бег.\n".encode("cp1251"))
    doc = _one(parse_transcript, path)
    assert doc.repair.source_encoding == "cp1251"
    assert [s.text for s in doc.segments] == ["Пульс во второй зоне.", "Это лёгкий бег."]


# --- Speaker names -----------------------------------------------------------------------------


def test_speaker_names_need_capitals_arrows_recurrence_or_company():
    assert speaker_names(["Note: the track was wet.", "We ran anyway."]) == set()
    assert speaker_names(["[Laughter] that was funny"]) == set()
    assert speaker_names(["JOHN: hi", "Mary: hello"]) == {"JOHN", "Mary"}
    assert speaker_names([">> Anna: question?"]) == {"Anna"}
    assert speaker_names(["Coach: one", "Coach: two"]) == {"Coach"}
