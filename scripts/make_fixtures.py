"""Regenerate the binary article/lecture fixtures, the export archives and the demo PDF (the outputs are committed).

    .venv/bin/python scripts/make_fixtures.py            # everything
    .venv/bin/python scripts/make_fixtures.py --exports  # only the ChatGPT / Claude export ZIPs

Needs fpdf2 (dev dependency) and a TrueType font with Cyrillic (DejaVu Sans, as Debian's
fonts-dejavu-core installs it); pypdf writes the encrypted variants.
"""

from __future__ import annotations

import io
import json
import random
import sys
import zipfile
from datetime import UTC
from pathlib import Path

from fpdf import FPDF
from PIL import Image, ImageDraw
from pypdf import PdfWriter

ROOT = Path(__file__).resolve().parent.parent
ARTICLES = ROOT / "tests" / "fixtures" / "articles"
LECTURES = ROOT / "tests" / "fixtures" / "lectures"
EXPORTS = ROOT / "tests" / "fixtures" / "exports"
DEMO = ROOT / "demo" / "articles"
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")

# Fixed creation date: regenerating must give the same bytes, hence the same doc_id.
CREATED = "20240315090000"


class _Pdf(FPDF):
    """A4 PDF with DejaVu fonts and a page-number footer (which the parser must drop)."""

    def __init__(self, *, title: str | None = None, numbered: bool = True):
        super().__init__(format="A4")
        self.numbered = numbered
        self.add_font("DejaVu", "", str(FONT_DIR / "DejaVuSans.ttf"))
        self.add_font("DejaVu", "B", str(FONT_DIR / "DejaVuSans-Bold.ttf"))
        self.set_creation_date(_fixed_date())
        if title:
            self.set_title(title)
            self.set_author("Memory Pipeline fixtures")
        self.set_auto_page_break(True, margin=20)

    def footer(self) -> None:
        if self.numbered:
            self.set_y(-15)
            self.set_font("DejaVu", "", 9)
            self.cell(0, 10, str(self.page_no()), align="C")

    def heading(self, text: str) -> None:
        self.set_font("DejaVu", "B", 15)
        self.multi_cell(0, 9, text, new_x="LMARGIN", new_y="NEXT")
        self.ln(2)

    def paragraph(self, text: str) -> None:
        self.set_font("DejaVu", "", 11)
        self.multi_cell(0, 6, text, new_x="LMARGIN", new_y="NEXT")
        self.ln(3)


def _fixed_date():
    from datetime import datetime

    return datetime.strptime(CREATED, "%Y%m%d%H%M%S").replace(tzinfo=UTC)


def pacing_pdf(path: Path) -> None:
    """Two pages, Russian and English, a metadata title, headings, a hyphen at a line break."""
    pdf = _Pdf(title="Marathon pacing notes")
    pdf.add_page()
    pdf.heading("Темп марафона")
    pdf.paragraph(
        "Первая половина марафона должна быть чуть медленнее второй. Это называется негативный сплит: "
        "он сохраняет гликоген для последних десяти километров, где большинство бегунов теряют темп."
    )
    pdf.paragraph(
        "Easy runs build the aerobic base. Keep them conversational, at roughly seventy percent of maximum "
        "heart rate, and resist the temptation to turn every session into a race against your own watch "
        "and a carefully planned sched-\nule."
    )
    pdf.add_page()
    pdf.heading("Long run")
    pdf.paragraph(
        "The long run teaches the body to burn fat at marathon pace. Build it by no more than ten percent "
        "a week and take a lighter week every fourth week."
    )
    pdf.output(str(path))


def untitled_pdf(path: Path) -> None:
    """One page without a metadata title: the title comes from the first line."""
    pdf = _Pdf(numbered=False)
    pdf.add_page()
    pdf.heading("Recovery after a race")
    pdf.paragraph("Walk for ten minutes, eat within an hour, and sleep longer than usual for three nights.")
    pdf.output(str(path))


def scanned_pdf(path: Path) -> None:
    """A page that is only a picture of text, as a scanner makes it: no text layer."""
    image = Image.new("L", (600, 200), color=255)
    ImageDraw.Draw(image).text((20, 80), "Scanned page: no text layer", fill=0)
    pdf = FPDF(format="A4")
    pdf.set_creation_date(_fixed_date())
    pdf.add_page()
    pdf.image(image, x=10, y=10, w=180)
    pdf.output(str(path))


def encrypted_pdf(source: Path, path: Path, *, user_password: str, owner_password: str) -> None:
    writer = PdfWriter(clone_from=str(source))
    # RC4 needs no crypto package to write or read; AES would need 'cryptography'.
    writer.encrypt(user_password, owner_password=owner_password, algorithm="RC4-128")
    with open(path, "wb") as handle:
        writer.write(handle)


def demo_pdf(path: Path) -> None:
    """The demo corpus's article: three pages on marathon training, Russian with English terms."""
    pdf = _Pdf(title="Как пробежать первый марафон: темп, объём, восстановление")
    pdf.add_page()
    pdf.heading("Как пробежать первый марафон")
    for text in DEMO_PAGE_1:
        pdf.paragraph(text)
    pdf.add_page()
    pdf.heading("Темп в день старта")
    for text in DEMO_PAGE_2:
        pdf.paragraph(text)
    pdf.add_page()
    pdf.heading("Recovery and the taper")
    for text in DEMO_PAGE_3:
        pdf.paragraph(text)
    pdf.output(str(path))


DEMO_PAGE_1 = [
    "Марафон — это не забег на скорость, а упражнение в терпении. Большинство новичков проваливают вторую "
    "половину дистанции не потому, что мало тренировались, а потому что слишком быстро начали. Адреналин "
    "стартового коридора делает темп 5:20 на километр лёгким, хотя на тренировках вы держали 5:45.",
    "Основа подготовки — объём лёгкого бега. Четыре-пять пробежек в неделю, из которых только одна "
    "интенсивная, дают аэробную базу: больше митохондрий, больше капилляров, выше способность сжигать жир. "
    "Лёгкий бег должен быть разговорным: если вы не можете произнести целое предложение, вы бежите слишком "
    "быстро.",
    "Длинная пробежка — главная тренировка недели. Её увеличивают постепенно, не более чем на десять "
    "процентов в неделю, с разгрузочной неделей каждую четвёртую неделю. Самая длинная пробежка перед "
    "марафоном — 30–32 километра, за три недели до старта. Бежать полную дистанцию на тренировке не нужно: "
    "восстановление после неё съест неделю подготовки.",
    "Темповые тренировки (tempo runs) учат держать темп на пороге лактата. Классический вариант — 20–30 "
    "минут в темпе, который вы могли бы держать около часа в соревновании. Их ставят раз в неделю и не "
    "совмещают с длинной пробежкой в соседние дни.",
]
DEMO_PAGE_2 = [
    "Рассчитайте целевой темп по результату контрольного полумарафона: хорошее приближение — время "
    "полумарафона, умноженное на 2,1. Если полумарафон пройден за 1:50, реалистичная цель — около 3:51 на "
    "марафоне, то есть 5:29 на километр.",
    "Первые пять километров бегите на 5–10 секунд на километр медленнее целевого темпа. С десятого по "
    "тридцатый километр держите целевой темп ровно, ориентируясь на ощущения и пульс, а не только на "
    "часы: GPS в городе между высокими домами ошибается.",
    "Питание на дистанции: 30–60 граммов углеводов в час, начиная с 40-й минуты. Гели запивают водой, а не "
    "изотоником, чтобы не перегрузить желудок. Всё, что вы едите в день старта, должно быть опробовано на "
    "длинных тренировках.",
    "Negative split is the pacing strategy of most world records: the second half is run slightly faster "
    "than the first. For a first marathon an even split is a sound goal, and a positive split of more than "
    "five minutes usually means the start was too fast.",
]
DEMO_PAGE_3 = [
    "The taper lasts two to three weeks. Volume drops by about forty percent in the final fortnight, but "
    "intensity stays: keep one short session at marathon pace so the legs remember the rhythm.",
    "After the race, walk for ten minutes, eat carbohydrates and protein within an hour, and take at least "
    "a week without running. A useful rule of thumb is one easy day for every mile raced before the next "
    "hard session.",
    "После марафона мышцы восстанавливаются две-три недели, даже если боль прошла через несколько дней. "
    "Возвращайтесь к бегу с коротких лёгких пробежек и не планируйте новый старт раньше чем через два "
    "месяца.",
]


def cp1251_text(path: Path) -> None:
    path.write_bytes(
        "Заметки о восстановлении\n\nСон — главный инструмент восстановления после тяжёлой тренировки.\n\n"
        "Пейте воду небольшими порциями в течение дня.\n".encode("cp1251")
    )


def cp1251_html(path: Path) -> None:
    page = (
        '<html><head><meta charset="windows-1251"><title>Интервальная тренировка</title></head>'
        "<body><nav>Главная | Блог</nav><main><h1>Интервальная тренировка</h1>"
        "<p>Интервалы по 1000 метров развивают МПК.</p></main><footer>© 2024 Беговой клуб</footer></body></html>"
    )
    path.write_bytes(page.encode("cp1251"))


def mojibake_text(path: Path) -> None:
    """UTF-8 Russian once decoded as Mac Roman and saved again: 'Но вот' became '–ù–æ –≤–æ—Ç'."""
    original = "Пульсовые зоны\n\nВторая пульсовая зона — это лёгкий бег, в котором строится аэробная база.\n"
    path.write_text(original.encode("utf-8").decode("mac_roman"), encoding="utf-8")


def binary_files() -> None:
    noise = random.Random(7).randbytes(2048)
    (LECTURES / "binary.srt").write_bytes(b"\x00\x01\x02\xff" + noise)
    (ARTICLES / "binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + noise)


# --- export archives, shaped like the real ChatGPT and Claude data exports -----------------------

ZIP_TIME = (2025, 3, 1, 12, 0, 0)  # fixed member times: same bytes on every run
ABOUT_ME_OLD = "Я бегаю марафоны, работаю инженером."
ABOUT_ME = "Я бегаю марафоны и работаю инженером-программистом. Считаю, что регулярность важнее таланта."
HOW_TO_ANSWER = "Отвечай по-русски, коротко и с цифрами; спорь со мной, если я ошибаюсь."


def write_zip(path: Path, members: dict[str, bytes]) -> None:
    """A deflated ZIP with fixed member times, members in the given order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)


def _node(node_id: str, parent: str | None, children: list[str], message: dict | None) -> dict:
    return {"id": node_id, "parent": parent, "children": children, "message": message}


def _message(node_id: str, role: str, content: dict, when: float, **extra) -> dict:
    message = {
        "id": node_id,
        "author": {"role": role, "name": None, "metadata": {}},
        "create_time": when,
        "update_time": None,
        "content": content,
        "status": "finished_successfully",
        "end_turn": None,
        "weight": 1.0,
        "metadata": {},
        "recipient": "all",
        "channel": None,
    }
    for key, value in extra.items():
        message[key] = value if key != "metadata" else {**message["metadata"], **value}
    return message


def _text(*parts: str) -> dict:
    return {"content_type": "text", "parts": list(parts)}


def _chatgpt_conversation(conv_id: str, title: str, start: float, about_me: str, chain: list[tuple]) -> dict:
    """A conversation whose branch is root -> hidden custom instructions -> ``chain`` (id, role, content, extra)."""
    context = _message(
        "ctx",
        "system",
        {"content_type": "text", "parts": [""]},
        start,
        metadata={
            "is_visually_hidden_from_conversation": True,
            "user_context_message_data": {"about_user_message": about_me, "about_model_message": HOW_TO_ANSWER},
            "is_user_system_message": True,
        },
    )
    ids = ["root", "ctx", *[c[0] for c in chain]]
    mapping = {"root": _node("root", None, ["ctx"], None), "ctx": _node("ctx", "root", [ids[2]], context)}
    for index, (node_id, role, content, extra) in enumerate(chain, start=2):
        children = [ids[index + 1]] if index + 1 < len(ids) else []
        message = _message(node_id, role, content, start + index * 10, **extra)
        mapping[node_id] = _node(node_id, ids[index - 1], children, message)
    return {
        "title": title,
        "create_time": start,
        "update_time": start + 600,
        "mapping": mapping,
        "moderation_results": [],
        "current_node": ids[-1],
        "plugin_ids": None,
        "conversation_id": conv_id,
        "conversation_template_id": None,
        "gizmo_id": None,
        "is_archived": False,
        "safe_urls": [],
        "default_model_slug": "gpt-4o",
        "id": conv_id,
    }


def chatgpt_export() -> dict[str, bytes]:
    """conversations.json (custom instructions, thoughts, code interpreter, an image-only turn), chat.html,
    user.json, message_feedback.json and the uploaded image, as in ChatGPT's "Export data" ZIP."""
    marathon_id = "6761e0b2-aaaa-8000-9000-000000000001"
    marathon = _chatgpt_conversation(
        marathon_id,
        "Подготовка к марафону",
        1735700000.0,
        ABOUT_ME,
        [
            ("u1", "user", _text("Хочу пробежать марафон из 3:30. Сколько недель готовиться?"), {}),
            (
                "t1",
                "assistant",
                {"content_type": "thoughts", "thoughts": [{"summary": "план", "content": "СКРЫТАЯ МЫСЛЬ"}]},
                {},
            ),
            ("r1", "assistant", {"content_type": "reasoning_recap", "content": "Думал 5 секунд"}, {}),
            (
                "a1",
                "assistant",
                _text("Около 16 недель при базе 40 км в неделю."),
                {"metadata": {"model_slug": "gpt-4o"}},
            ),
            (
                "u2",
                "user",
                {
                    "content_type": "multimodal_text",
                    "parts": [
                        {
                            "content_type": "image_asset_pointer",
                            "asset_pointer": "file-service://file-Ab12Cd34",
                            "size_bytes": 68,
                            "width": 1,
                            "height": 1,
                        }
                    ],
                },
                {
                    "metadata": {
                        "attachments": [{"id": "file-Ab12Cd34", "name": "pulse_chart.png", "mime_type": "image/png"}]
                    }
                },
            ),
            (
                "c1",
                "assistant",
                {"content_type": "code", "language": "python", "text": "print(42 / 16)"},
                {"recipient": "python"},
            ),
            ("o1", "tool", {"content_type": "execution_output", "text": "2.625"}, {}),
            ("a2", "assistant", _text("По графику пульс в зоне 2 — так и держи."), {}),
        ],
    )
    older = _chatgpt_conversation(
        "6761e0b2-aaaa-8000-9000-000000000002",
        "Кроссовки",
        1704100000.0,
        ABOUT_ME_OLD,
        [
            ("u1", "user", _text("Какие кроссовки взять для длинных?"), {}),
            ("a1", "assistant", _text("С амортизацией и запасом полразмера."), {}),
        ],
    )
    race_report = _chatgpt_conversation(
        "6761e0b2-aaaa-8000-9000-000000000003",
        "Протокол забега",
        1736000000.0,
        ABOUT_ME,
        [
            (
                "u1",
                "user",
                _text(""),
                {
                    "metadata": {
                        "attachments": [
                            {
                                "id": "file-Pd7Ef8Gh",
                                "size": 48213,
                                "name": "race_results.pdf",
                                "mime_type": "application/pdf",
                                "file_token_size": 1830,
                                "source": "local",
                            }
                        ]
                    }
                },
            ),
            ("a1", "assistant", _text("В протоколе твоё время 3:41:12, 412-е место."), {}),
            (
                "u2",
                "user",
                _text(""),
                {
                    "metadata": {
                        "attachments": [
                            {
                                "id": "file-Dc9Xy0Zz",
                                "size": 10240,
                                "name": "training_log.docx",
                                "mime_type": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                                "file_token_size": 900,
                                "source": "local",
                            },
                            {
                                "id": "file-Cs1Vv2Ww",
                                "size": 2048,
                                "name": "splits.csv",
                                "mime_type": "text/csv",
                                "file_token_size": 300,
                                "source": "local",
                            },
                        ]
                    }
                },
            ),
            ("a2", "assistant", _text("По дневнику и сплитам: вторая половина медленнее на 6 минут."), {}),
        ],
    )
    conversations = [marathon, older, race_report]
    html = (
        "<html><head><title>ChatGPT Data Export</title></head><body><h1>Подготовка к марафону</h1>"
        "<script>var jsonData = " + json.dumps(conversations, ensure_ascii=False) + ";</script></body></html>"
    )
    return {
        "user.json": json.dumps({"id": "user-abc", "email": "runner@example.com", "chatgpt_plus_user": True}).encode(),
        "conversations.json": json.dumps(conversations, ensure_ascii=False, indent=1).encode("utf-8"),
        "message_feedback.json": json.dumps(
            [
                {
                    "id": "fb-1",
                    "conversation_id": marathon["id"],
                    "user_id": "user-abc",
                    "rating": "thumbsUp",
                    "content": "{}",
                }
            ]
        ).encode(),
        "chat.html": html.encode("utf-8"),
        "file-Ab12Cd34-pulse_chart.png": _tiny_png(),
    }


def _tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def claude_export() -> dict[str, bytes]:
    """conversations.json (thinking blocks, an attachment's extracted text, a files-only message),
    projects.json (knowledge docs, custom instructions, an empty starter project), users.json and
    memories.json (Claude's memory of the user: account-wide and per project)."""
    conversation = {
        "uuid": "5f0c7a1e-bbbb-4000-8000-000000000001",
        "name": "Разбор плана тренировок",
        "created_at": "2025-02-10T08:00:00.000000Z",
        "updated_at": "2025-02-10T08:30:00.000000Z",
        "account": {"uuid": "acc-1"},
        "chat_messages": [
            {
                "uuid": "m1",
                "text": "Посмотри мой план",
                "sender": "human",
                "created_at": "2025-02-10T08:00:00.000000Z",
                "updated_at": "2025-02-10T08:00:00.000000Z",
                "content": [{"type": "text", "text": "Посмотри мой план на неделю, всё ли разумно?"}],
                "attachments": [
                    {
                        "file_name": "plan.txt",
                        "file_size": 120,
                        "file_type": "txt",
                        "extracted_content": "Понедельник: отдых.\n\nВторник: интервалы 5×1000 м.\n\n"
                        "Суббота: длительная 28 км.",
                    }
                ],
                "files": [],
            },
            {
                "uuid": "m2",
                "text": "",
                "sender": "assistant",
                "created_at": "2025-02-10T08:01:00.000000Z",
                "updated_at": "2025-02-10T08:01:00.000000Z",
                "content": [
                    {"type": "thinking", "thinking": "СКРЫТОЕ РАССУЖДЕНИЕ"},
                    {"type": "text", "text": "План разумный, но длительную лучше сократить до 24 км."},
                ],
                "attachments": [],
                "files": [],
            },
            {
                "uuid": "m3",
                "text": "",
                "sender": "human",
                "created_at": "2025-02-10T08:02:00.000000Z",
                "updated_at": "2025-02-10T08:02:00.000000Z",
                "content": [],
                "attachments": [],
                "files": [{"file_name": "watch_export.fit"}],
            },
            {
                "uuid": "m4",
                "text": "Файл с часов не читается, но по плану всё ок.",
                "sender": "assistant",
                "created_at": "2025-02-10T08:03:00.000000Z",
                "updated_at": "2025-02-10T08:03:00.000000Z",
                "content": [],
                "attachments": [],
                "files": [],
            },
        ],
    }
    projects = [
        {
            "uuid": "proj-1",
            "name": "Марафон 2025",
            "description": "Подготовка к весеннему марафону",
            "is_private": True,
            "is_starter_project": False,
            "prompt_template": "Я готовлюсь к марафону; учитывай мой пульс и объёмы.",
            "created_at": "2025-01-05T10:00:00.000000Z",
            "updated_at": "2025-02-01T10:00:00.000000Z",
            "creator": {"uuid": "acc-1", "full_name": "Runner"},
            "docs": [
                {
                    "uuid": "doc-1",
                    "filename": "zones.md",
                    "created_at": "2025-01-05T10:05:00.000000Z",
                    "content": "# Пульсовые зоны\n\nЗона 2: 130–145 ударов.\n\nЗона 4: 165–175 ударов.",
                }
            ],
        },
        {
            "uuid": "proj-2",
            "name": "How to use Claude",
            "description": "",
            "is_private": False,
            "is_starter_project": True,
            "prompt_template": "",
            "created_at": "2025-01-01T00:00:00.000000Z",
            "updated_at": "2025-01-01T00:00:00.000000Z",
            "creator": {"uuid": "acc-1", "full_name": "Runner"},
            "docs": [],
        },
    ]
    users = [
        {"uuid": "acc-1", "full_name": "Runner", "email_address": "runner@example.com", "verified_phone_number": None}
    ]
    memories = [
        {
            "conversations_memory": "**Work context**\n\nИнженер-программист, бегает марафоны.\n\n"
            "**Preferences**\n\nПросит коротких ответов с цифрами.",
            "project_memories": {"proj-1": "Готовится к весеннему марафону, цель 3:30."},
            "account_uuid": "acc-1",
        }
    ]
    return {
        "conversations.json": json.dumps([conversation], ensure_ascii=False, indent=1).encode("utf-8"),
        "projects.json": json.dumps(projects, ensure_ascii=False, indent=1).encode("utf-8"),
        "users.json": json.dumps(users, ensure_ascii=False).encode("utf-8"),
        "memories.json": json.dumps(memories, ensure_ascii=False, indent=1).encode("utf-8"),
    }


def exports() -> None:
    write_zip(EXPORTS / "chatgpt_export.zip", chatgpt_export())
    write_zip(EXPORTS / "claude_export.zip", claude_export())


def main() -> None:
    exports()
    ARTICLES.mkdir(parents=True, exist_ok=True)
    LECTURES.mkdir(parents=True, exist_ok=True)
    DEMO.mkdir(parents=True, exist_ok=True)
    pacing = ARTICLES / "marathon_pacing.pdf"
    pacing_pdf(pacing)
    untitled_pdf(ARTICLES / "untitled.pdf")
    scanned_pdf(ARTICLES / "scanned.pdf")
    encrypted_pdf(pacing, ARTICLES / "encrypted.pdf", user_password="secret", owner_password="owner")
    encrypted_pdf(pacing, ARTICLES / "owner_only.pdf", user_password="", owner_password="owner")
    data = pacing.read_bytes()
    (ARTICLES / "truncated.pdf").write_bytes(data[: len(data) // 2])
    cp1251_text(ARTICLES / "cp1251_russian.txt")
    cp1251_html(ARTICLES / "cp1251_page.html")
    mojibake_text(ARTICLES / "mojibake.txt")
    binary_files()
    demo_pdf(DEMO / "marathon_first_race.pdf")


if __name__ == "__main__":
    exports() if "--exports" in sys.argv[1:] else main()
