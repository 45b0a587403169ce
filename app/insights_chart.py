"""The confusion matrix as a picture, drawn with Pillow (no plotting library).

Rows are the true labels, columns the predicted ones; each cell holds its count and is shaded
by its share of the row (so the diagonal's shade is the class's recall). Label names are cut to
LABEL_CHARS characters; more than MAX_LABELS labels: the most frequent ones are drawn.
"""

from __future__ import annotations

import io

from PIL import Image, ImageDraw, ImageFont

MAX_LABELS = 30
LABEL_CHARS = 16
BACKGROUND = (255, 255, 255)
INK = (31, 41, 55)
LIGHT = (239, 246, 255)  # an empty row's share (0)
DARK = (29, 78, 216)  # a full row's share (1)
GRID = (209, 213, 219)


def _font(size: int):
    return ImageFont.load_default(size=size)


def _short(label) -> str:
    text = str(label)
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def _shade(share: float) -> tuple[int, int, int]:
    share = min(max(share, 0.0), 1.0)
    return tuple(round(a + (b - a) * share) for a, b in zip(LIGHT, DARK, strict=True))


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def _kept(counts: list[list[int]], labels: list[str]) -> list[int]:
    """The label indices drawn: all of them, or the MAX_LABELS with the most rows."""
    if len(labels) <= MAX_LABELS:
        return list(range(len(labels)))
    weight = [sum(counts[i]) + sum(row[i] for row in counts) for i in range(len(labels))]
    top = sorted(range(len(labels)), key=lambda i: -weight[i])[:MAX_LABELS]
    return sorted(top)


def _vertical(text: str, font, fill) -> Image.Image:
    """`text` written bottom to top, on a transparent strip."""
    probe = ImageDraw.Draw(Image.new("RGBA", (1, 1)))
    width, height = _text_size(probe, text, font)
    strip = Image.new("RGBA", (width + 4, height + 6), (0, 0, 0, 0))
    ImageDraw.Draw(strip).text((2, 0), text, font=font, fill=fill)
    return strip.rotate(90, expand=True)


def confusion_image(counts: list[list[int]], labels: list[str], title: str = "") -> Image.Image:
    """The matrix as an RGB image: counts in shaded cells, label names, axes true/predicted."""
    keep = _kept(counts, labels)
    if len(keep) < len(labels):
        title = f"{title} ({len(keep)} most frequent of {len(labels)} labels)".strip()
    n = max(len(keep), 1)
    cell = max(22, min(72, 480 // n))
    cell_font, label_font, title_font = _font(max(9, cell // 3)), _font(12), _font(14)
    names = [_short(labels[i]) for i in keep]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    name_width = max([_text_size(probe, name, label_font)[0] for name in names] + [20])
    left = 28 + name_width + 8  # "true" axis title, then the row names
    top = 34 if title else 12
    grid = cell * n
    bottom = 8 + name_width + 28  # column names written upwards, then "predicted"
    title_width = _text_size(probe, title, title_font)[0] if title else 0
    width = max(
        left + grid, left + title_width, left + _text_size(probe, "predicted", label_font)[0]
    )
    image = Image.new("RGB", (width + 16, top + grid + bottom), BACKGROUND)
    draw = ImageDraw.Draw(image)
    if title:
        draw.text((left, 8), title, font=title_font, fill=INK)
    for r, i in enumerate(keep):
        row_total = sum(counts[i])
        for c, j in enumerate(keep):
            value = counts[i][j]
            box = (left + c * cell, top + r * cell, left + (c + 1) * cell, top + (r + 1) * cell)
            share = value / row_total if row_total else 0.0
            draw.rectangle(box, fill=_shade(share), outline=GRID)
            text = str(value)
            width, height = _text_size(draw, text, cell_font)
            ink = BACKGROUND if share > 0.5 else INK
            draw.text(
                (box[0] + (cell - width) / 2, box[1] + (cell - height) / 2 - 2),
                text,
                font=cell_font,
                fill=ink,
            )
        width, height = _text_size(draw, names[r], label_font)
        draw.text(
            (left - 8 - width, top + r * cell + (cell - height) / 2 - 2),
            names[r],
            font=label_font,
            fill=INK,
        )
    for c, name in enumerate(names):
        strip = _vertical(name, label_font, INK)
        x = left + c * cell + (cell - strip.width) // 2
        image.paste(strip, (x, top + grid + 6), strip)
    axis = _vertical("true", label_font, INK)
    image.paste(axis, (6, top + (grid - axis.height) // 2), axis)
    width, _ = _text_size(draw, "predicted", label_font)
    draw.text(
        (left + (grid - width) / 2, top + grid + bottom - 22),
        "predicted",
        font=label_font,
        fill=INK,
    )
    return image


def png_bytes(image: Image.Image) -> bytes:
    """The image as PNG file bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
