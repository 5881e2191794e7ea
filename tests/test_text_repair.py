"""Text repair: double-encoding is undone exactly, correct text of any language is left alone."""

import random
import re
from pathlib import Path

import pytest

from memory_pipeline.errors import ParseError
from memory_pipeline.ingest.text_repair import clean_text, decode_bytes, read_text_file, repair_many, repair_text

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "repair"
SAMPLES = sorted(FIXTURES.glob("*.md"))
CORRECT_RUSSIAN = FIXTURES / "correct_russian.txt"

RUSSIAN = "Но вот по чисто знаниям ИИ стэка — я отстаю сильно, всё для меня ново. Съешь ещё этих булок, Нина!"
ENGLISH_ACCENTS = "The café in Zürich served a naïve crème brûlée — “déjà vu”, said Müller. Señor Ærø’s piñata: 5 €."


def misdecode(text: str, codec: str) -> str:
    """The accident itself: UTF-8 bytes read as a single-byte codec (as browsers do it, keeping
    the bytes cp1252 and cp1251 leave undefined as C1 controls)."""
    return "".join(bytes([b]).decode(codec, errors="ignore") or chr(b) for b in text.encode("utf-8"))


def oracle(text: str) -> str:
    return "\n".join(line.encode("mac_roman").decode("utf-8") for line in text.split("\n"))


def test_fixture_samples_are_present():
    assert len(SAMPLES) == 4


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_nexus_samples_repair_fully_and_exactly(path):
    garbled = path.read_text(encoding="utf-8")
    repaired, report = repair_text(garbled)
    assert repaired == oracle(garbled)
    assert report.repaired and report.codec == "mac_roman"
    assert report.lines_repaired == sum(1 for line in garbled.split("\n") if not line.isascii())
    assert not re.search(r"–[^\s\d]|Ã|Ð|‚Ä", repaired)
    assert len(re.findall("[а-яё]", repaired, re.IGNORECASE)) > 1000
    assert ">[!nexus_user] **User**" in repaired


@pytest.mark.parametrize("codec", ["cp1252", "latin-1", "mac_roman", "cp1251", "koi8_r"])
@pytest.mark.parametrize("original", [RUSSIAN, ENGLISH_ACCENTS], ids=["russian", "english"])
def test_synthetic_double_encoding_repairs_exactly(codec, original):
    garbled = misdecode(original, codec)
    assert garbled != original
    repaired, report = repair_text(garbled)
    assert repaired == original
    assert report.repaired and report.lines_repaired == 1


def test_codec_is_identified():
    assert repair_text(misdecode(RUSSIAN, "cp1252"))[1].codec == "cp1252"
    assert repair_text(misdecode(RUSSIAN, "latin-1"))[1].codec == "latin-1"
    assert repair_text(misdecode(RUSSIAN, "mac_roman"))[1].codec == "mac_roman"
    assert repair_text(misdecode(RUSSIAN, "cp1251"))[1].codec == "cp1251"
    assert repair_text(misdecode(RUSSIAN, "koi8_r"))[1].codec == "koi8_r"


@pytest.mark.parametrize(
    ("garbled", "original", "codec"),
    [
        ("РџСЂРёРІРµС‚, РєР°Рє РґРµР»Р°?", "Привет, как дела?", "cp1251"),
        ("РќСѓ РІРѕС‚ вЂ” В«РЃР»РєР°В» в„–7 рџ‘Ќ", "Ну вот — «Ёлка» №7 👍", "cp1251"),
        ("ItвЂ™s a вЂњtestвЂќ вЂ” done", "It’s a “test” — done", "cp1251"),
        ("п÷я─п╦п╡п╣я┌, п╨п╟п╨ п╢п╣п╩п╟?", "Привет, как дела?", "koi8_r"),
    ],
    ids=["cp1251", "cp1251-punctuation", "cp1251-english", "koi8_r"],
)
def test_cyrillic_codec_mojibake_as_users_see_it(garbled, original, codec):
    repaired, report = repair_text(garbled)
    assert repaired == original
    assert report.codec == codec and report.lines_repaired == 1


def test_cp1252_undefined_bytes_kept_as_c1_controls_are_recovered():
    # с, я, э, Н, А end in 0x81, 0x8F, 0x8D, 0x9D, 0x90: bytes cp1252 leaves undefined
    original = "сямэ Нина Анна сэр"
    garbled = misdecode(original, "cp1252")
    assert {"\x81", "\x8f", "\x8d", "\x9d", "\x90"} <= set(garbled)
    assert repair_text(garbled)[0] == original


def test_cp1251_undefined_byte_kept_as_c1_control_is_recovered():
    # И is 0xD0 0x98 and 😀 is 0xF0 0x9F 0x98 0x80: 0x98 is the one byte cp1251 leaves undefined
    original = "ИИ и Игорь 😀"
    garbled = misdecode(original, "cp1251")
    assert "Р\x98" in garbled
    assert repair_text(garbled) == (original, repair_text(garbled)[1])
    assert repair_text(garbled)[1].codec == "cp1251"


CORRECT_TEXTS = {
    "russian": RUSSIAN + "\n«Ёлка» — 3–5 км, №7.",
    "english": "Plain English — with “smart quotes”, an ellipsis… and 10° ± 2°.",
    "emoji": "Готово ✅ 🧩 👨‍👩‍👧 ⚠️ 🚴",
    "cjk": "中文 日本語のテキスト 한국어 문장",
    "french": "L’été à Paris : « Ça va ? » — “élan”, déjà vu, CAFÉ’S, où, naïve, garçon.",
    "german": "Müller aß Äpfel „Über“ die Straße; Öl für ÄRGER.",
    "vietnamese_spanish": "Tiếng Việt đẹp; ¿Qué tal, señor? ¡Hola! año niño",
    "greek_hebrew_arabic": "λόγος Ελληνικά שלום עולם مرحبا",
    "quotes_mojibake": "Почему токенизатор выдаёт Ð¿Ñ€Ð¸Ð²ÐµÑ‚ и Ã© вместо «привет» и é?",
    "quotes_mojibake_in_code": "In the GPT-2 vocabulary `Ã©` is é and `Ð¿Ñ€Ð¸Ð²ÐµÑ‚` is привет.",
    "fenced_mojibake": "Byte-level BPE:\n```\nÃ© -> é\nâ€™ -> ’\n```\nThat is expected.",
    "russian_r_s_words": "Рыба, Сила, Рёв и Рёрих; СССР, РФ, РЖД. ТЁМНЫЙ ЛЕС, ЕЁ ПИСЬМО. Варианты «А», «Б», «В».",
    "russian_closing_punctuation": "Витамин С… — Он сказал: «Ну и…» — «Может, её…» — Её. Всё, моё, бельё, 50 м².",
    "russian_nbsp_typography": "В\xa0доме, О\xa0нём, У\xa0реки, в\xa0«Ленте», с\xa0ним\xa0— и\xa0т.\xa0д.",
    "ukrainian_serbian": "Рік тому Її ґанок, Європа. Ђорђе је рекао да Љубљана није далеко; Ћуприја.",
    "quotes_cp1251_mojibake": "Почему модель выдаёт РџСЂРёРІРµС‚ и вЂ” вместо «Привет» и —?",
    "quotes_koi8_mojibake": "А в письме стоит п÷я─п╦п╡п╣я┌ — это KOI8-R, тот же «Привет».",
}


@pytest.mark.parametrize("text", CORRECT_TEXTS.values(), ids=CORRECT_TEXTS.keys())
def test_correct_text_comes_back_byte_identical(text):
    repaired, report = repair_text(text)
    assert repaired.encode("utf-8") == text.encode("utf-8")
    assert not report.repaired and report.codec is None and report.lines_repaired == 0


@pytest.mark.parametrize(
    "text", ["ЕЁ", "Её.", "С…", "«В»", "В\xa0доме", "Ну и…»", "РЁ", "её", "всё", "Рёв", "ТЁМНЫЙ", "Vitamin С…"]
)
def test_short_correct_russian_is_not_taken_for_cp1251_or_koi8(text):
    """Letters of these codecs followed by letters or closing punctuation that happen to be UTF-8
    continuation bytes: a correct word ending, not a garbled character."""
    assert repair_text(text) == (text, repair_text(text)[1])
    assert not repair_text(text)[1].repaired


def test_correct_russian_fixture_comes_back_byte_identical_whole_and_line_by_line():
    text = CORRECT_RUSSIAN.read_text(encoding="utf-8")
    assert "\xa0" in text and "РџСЂРёРІРµС‚" in text
    assert repair_text(text)[0].encode("utf-8") == text.encode("utf-8")
    assert not repair_text(text)[1].repaired
    for line in text.split("\n"):
        assert repair_text(line) == (line, repair_text(line)[1]) and not repair_text(line)[1].repaired


@pytest.mark.parametrize("codec", ["cp1251", "koi8_r"])
def test_garbled_russian_fixture_repairs_exactly_one_round(codec):
    """The fixture quotes garbled words on purpose; undoing one round brings them back as quoted."""
    text = CORRECT_RUSSIAN.read_text(encoding="utf-8")
    repaired, report = repair_text(misdecode(text, codec))
    assert repaired == text
    assert report.codec == codec
    assert report.lines_repaired == sum(1 for line in text.split("\n") if not line.isascii())


def russian_sentences(count: int) -> list[str]:
    """Correct Russian as the user writes it: names and towns on Р/С, abbreviations, Ё, lettered
    options, guillemets, dashes, ellipses, numbers, units and emoji."""
    rng = random.Random(1251)
    slots = {
        "name": ["Роман", "Сергей", "Светлана", "Рита", "Сёма", "Руслан", "Семён", "Пётр", "Алёна", "Артём"],
        "city": ["Рязани", "Ростове", "Самаре", "Саратове", "Сочи", "Сургуте", "Орле", "Риме", "Ржеве"],
        "abbr": ["СССР", "РФ", "РЖД", "СНГ", "РАН", "СПбГУ", "ЕГЭ", "ВВП", "СМИ", "ИИ", "GPU", "LoRA"],
        "noun": ["рыба", "сила", "сеть", "работа", "рёв", "сёмга", "ребёнок", "ёлка", "лёд", "счёт", "приём"],
        "adj": ["тёмный", "чёрный", "зелёный", "лёгкий", "серьёзный", "ранний", "свежий", "решённый"],
        "verb": ["ревёт", "растёт", "ждёт", "идёт", "нашёл", "пришёл", "учится", "считает", "сказала"],
        "letter": list("АБВГДЕЖЗИКЛМНОПРСТУФХЦЧШЭЮЯ"),
        "caps": ["ЁЖ", "ЕЁ", "ЧЁРНЫЙ", "ТЁМНЫЙ", "ВСЁ", "ЕЩЁ", "РЁВ", "ИТОГО", "ВАЖНО"],
        "end": [".", "!", "?", "…", "?!", "…»", ".»", "”", "“"],
        "emoji": ["✅", "👍", "🔥", "😀", "🚴", "⚠️", ""],
    }
    templates = [
        "{name} из {city} сказал: «{adj} {noun} {verb}{end}",
        "Ответ — «{letter}», а не «{letter}»{end} {emoji}",
        "{caps}: {noun} {verb}, {abbr} и {abbr} — {adj} {noun}{end}",
        "В {city} {noun} {verb} {n}–{n} раз, т. е. {n} %, № {n}{end}",
        "— {name}, {noun} {verb}? — Ну и… {adj} {noun}{end}",
        "Группа {letter}… {abbr}, {n} °С, {n} м², {n} ₽{end}",
        "„{name} {verb}“, а ‚{noun}‘ — {adj}{end} {emoji}",
        "{name} {letter}. {name}ов, {abbr} {abbr}: {adj} {noun} {verb} — её, всё, моё{end}",
    ]

    def fill(template: str) -> str:
        text = re.sub(r"\{n\}", lambda _: str(rng.randint(1, 999)), template)
        return re.sub(r"\{(\w+)\}", lambda m: rng.choice(slots[m.group(1)]), text)

    return [fill(rng.choice(templates)) for _ in range(count)]


def test_generated_russian_sentences_are_left_alone_and_their_garbling_is_undone():
    sentences = russian_sentences(400)
    for sentence in sentences:
        assert repair_text(sentence)[0] == sentence and not repair_text(sentence)[1].repaired
        for codec in ("cp1251", "koi8_r"):
            assert repair_text(misdecode(sentence, codec)) == (sentence, repair_text(misdecode(sentence, codec))[1])
    assert repair_many(sentences) == (sentences, repair_many(sentences)[1])
    assert not repair_many(sentences)[1].repaired


def test_correct_nexus_sample_is_not_repaired_again():
    correct = oracle(SAMPLES[0].read_text(encoding="utf-8"))
    assert repair_text(correct) == (correct, repair_text(correct)[1])
    assert not repair_text(correct)[1].repaired


def test_mixed_file_repairs_only_the_garbled_lines():
    lines = [
        "# Notes",
        "plain ascii line",
        misdecode("Это строка — с эмодзи", "mac_roman") + " ✅ 🧩 done",
        "```python",
        "print('hello')  # " + misdecode("комментарий", "mac_roman"),
        "```",
        misdecode("ещё одна строка", "mac_roman"),
        "",
    ]
    repaired, report = repair_text("\r\n".join(lines))
    assert repaired == "\r\n".join(
        [
            "# Notes",
            "plain ascii line",
            "Это строка — с эмодзи ✅ 🧩 done",
            "```python",
            "print('hello')  # комментарий",
            "```",
            "ещё одна строка",
            "",
        ]
    )
    assert report.codec == "mac_roman" and report.lines_repaired == 3


@pytest.mark.parametrize(
    ("original", "codec"),
    [
        ("Вопрос: почему в словаре `Ã©`, а не é?\nОтвет: это байты UTF-8, прочитанные как cp1252.", "cp1252"),
        ("Вопрос: почему вместо «Привет» `РџСЂРёРІРµС‚`?\nОтвет: это UTF-8, прочитанный как cp1251: РЎРѕРЅ.", "cp1251"),
    ],
    ids=["cp1252", "cp1251"],
)
def test_one_round_only_keeps_mojibake_the_author_quoted(original, codec):
    repaired, report = repair_text(misdecode(original, codec))
    assert repaired == original
    assert report.codec == codec


def test_correct_russian_line_in_a_cp1251_garbled_file_is_left_alone():
    """The accident is per file, but a correct line added later has its own letters: «В» stays."""
    lines = [RUSSIAN, "Привет, как дела?", "Всё хорошо — бегаю по утрам."]
    added = "Позже: ответ «В», Рёв."
    repaired, report = repair_text("\n".join([*(misdecode(line, "cp1251") for line in lines), added]))
    assert repaired == "\n".join([*lines, added])
    assert report.codec == "cp1251" and report.lines_repaired == 3


def test_repair_many_makes_one_decision_for_the_group():
    originals = ["Привет!", "ok", "в", "Как дела? Всё хорошо."]
    # "–≤" alone reads like two symbols; the group decision repairs it with the rest
    repaired, report = repair_many([misdecode(t, "mac_roman") for t in originals])
    assert repaired == originals
    assert report.repaired and report.codec == "mac_roman" and report.lines_repaired == 3
    assert repair_text(misdecode("в", "mac_roman"))[0] == "–≤"

    repaired, report = repair_many([misdecode(t, "cp1251") for t in originals])
    assert repaired == originals and report.codec == "cp1251"
    assert repair_text(misdecode("в", "cp1251"))[0] == "РІ"


def test_repair_many_leaves_a_correct_conversation_alone():
    messages = ["Что значит `Ã©` в словаре токенизатора?", "Это é, прочитанное как cp1252: Ã©.", "Ясно, спасибо!"]
    repaired, report = repair_many(messages)
    assert repaired == messages
    assert not report.repaired


def test_repair_many_merges_cleaning_and_nfc():
    repaired, report = repair_many(["\ufeffstart", "cafe\u0301", "a\u200bb"])
    assert repaired == ["start", "café", "ab"]
    assert report.junk_removed == 2 and report.normalized_nfc and not report.repaired


def test_clean_text_strips_junk_and_keeps_joiners_and_line_endings():
    text = "\ufeffa\u200bb\u2060c\x00d\x07e\x1bf\x7fg\x85h\x9di\ufeff\r\n\tj\u200dk\u200cl\n"
    cleaned, removed = clean_text(text)
    assert cleaned == "abcdefghi\r\n\tj\u200dk\u200cl\n"
    assert removed == 10
    assert clean_text("👨\u200d👩\u200d👧 می\u200cخواهم") == ("👨\u200d👩\u200d👧 می\u200cخواهم", 0)


def test_repair_text_strips_bom_after_undoing_and_normalizes_nfc():
    repaired, report = repair_text(misdecode("\ufeffПривет, мир", "cp1252"))
    assert repaired == "Привет, мир"
    assert report.repaired and report.junk_removed == 1

    repaired, report = repair_text("cafe\u0301 and Ame\u0301lie")
    assert repaired == "café and Amélie"
    assert report.normalized_nfc and not report.repaired


def test_macos_decomposed_accents_survive_double_encoding():
    repaired, report = repair_text(misdecode("cafe\u0301 nai\u0308ve", "mac_roman"))
    assert repaired == "café naïve"
    assert report.repaired and report.normalized_nfc


@pytest.mark.parametrize(
    ("data", "text", "encoding"),
    [
        (b"\xef\xbb\xbfhello", "hello", "utf-8-sig"),
        ("\ufeffпривет".encode("utf-16-le"), "привет", "utf-16-le"),
        ("\ufeffпривет".encode("utf-16-be"), "привет", "utf-16-be"),
        ("\ufeffпривет".encode("utf-32-le"), "привет", "utf-32-le"),
        ("\ufeffпривет".encode("utf-32-be"), "привет", "utf-32-be"),
        ("привет, café".encode(), "привет, café", "utf-8"),
        ("Привет, как дела? Всё хорошо.".encode("cp1251"), "Привет, как дела? Всё хорошо.", "cp1251"),
        ("Сон".encode("cp1251"), "Сон", "cp1251"),
        ("Привет, как дела? Всё хорошо.".encode("koi8_r"), "Привет, как дела? Всё хорошо.", "koi8_r"),
        ("Le café est très naïf.".encode("cp1252"), "Le café est très naïf.", "cp1252"),
    ],
    ids=["utf8-bom", "utf16le", "utf16be", "utf32le", "utf32be", "utf8", "cp1251", "cp1251-short", "koi8_r", "cp1252"],
)
def test_decode_bytes(data, text, encoding):
    assert decode_bytes(data, "f.txt") == (text, encoding)


@pytest.mark.parametrize(
    "data",
    [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", bytes(range(1, 32)) * 20 + b"text", b"PK\x03\x04\x14\x00"],
    ids=["png", "control-heavy", "zip"],
)
def test_decode_bytes_rejects_binary(data):
    with pytest.raises(ParseError) as info:
        decode_bytes(data, "blob.txt")
    assert "blob.txt" in str(info.value) and "binary" in str(info.value)


def test_decode_bytes_rejects_a_broken_bom_file():
    with pytest.raises(ParseError, match="utf-16-be"):
        decode_bytes(b"\xfe\xff\xd8\x00", "f.txt")


def test_read_text_file_reports_the_source_encoding(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes("Заметки: пульс 140–150, «лёгкий бег».\n".encode("cp1251"))
    text, report = read_text_file(path)
    assert text == "Заметки: пульс 140–150, «лёгкий бег».\n"
    assert report.source_encoding == "cp1251" and not report.repaired


def test_read_text_file_repairs_a_sample(tmp_path):
    path = tmp_path / "note.md"
    path.write_bytes(b"\xef\xbb\xbf" + SAMPLES[1].read_bytes())
    text, report = read_text_file(path)
    assert text == oracle(SAMPLES[1].read_text(encoding="utf-8"))
    assert report.source_encoding == "utf-8-sig" and report.codec == "mac_roman"


def test_read_text_file_errors_name_the_file(tmp_path):
    binary = tmp_path / "image.md"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(ParseError, match="image.md: binary file, not text"):
        read_text_file(binary)
    with pytest.raises(ParseError, match="missing.md: cannot read"):
        read_text_file(tmp_path / "missing.md")
