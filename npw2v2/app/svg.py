"""Hand-written SVG and PNG for explain's HTML page: elements as strings, heat maps as images.

No plotting library: the figures are rectangles, paths and text, and a heat map is a PNG
(written here with zlib) that the page embeds as a data: URI, so the page needs nothing
from the network. Element attributes ``data_item=0`` are written ``data-item="0"``: the
tests read the figures' facts back from them.
"""
from __future__ import annotations

import base64
import html
import struct
import zlib

import numpy as np


def attributes(attrs: dict) -> str:
    """``{"class_": "mask", "data_item": 0}`` -> ` class="mask" data-item="0"` (None values left out)."""
    parts = []
    for key, value in attrs.items():
        if value is None:
            continue
        name = key.rstrip("_").replace("_", "-")
        if isinstance(value, float):
            value = f"{value:.6g}"
        parts.append(f' {name}="{html.escape(str(value))}"')
    return "".join(parts)


def tag(name: str, *children: str, **attrs) -> str:
    """One element with its children (strings of markup): ``tag("g", rect, class_="item")``."""
    return f"<{name}{attributes(attrs)}>{''.join(children)}</{name}>"


def text(x: float, y: float, words: str, **attrs) -> str:
    """A label at (x, y), escaped."""
    return tag("text", html.escape(words), x=round(x, 1), y=round(y, 1), **attrs)


def rect(x: float, y: float, width: float, height: float, *children: str, **attrs) -> str:
    return tag("rect", *children, x=round(x, 2), y=round(y, 2), width=round(max(width, 0), 2), height=round(height, 2),
               **attrs)


def line(x1: float, y1: float, x2: float, y2: float, **attrs) -> str:
    return tag("line", x1=round(x1, 2), y1=round(y1, 2), x2=round(x2, 2), y2=round(y2, 2), **attrs)


def title(words: str) -> str:
    """A tooltip for the element it is placed in."""
    return tag("title", html.escape(words))


def svg(width: float, height: float, *children: str, **attrs) -> str:
    # No xmlns: SVG inside HTML needs none, and the page names no address at all.
    return tag("svg", *children, width=round(width), height=round(height),
               viewBox=f"0 0 {round(width)} {round(height)}", **attrs)


def image(x: float, y: float, width: float, height: float, rgb: np.ndarray, **attrs) -> str:
    """A [H, W, 3] uint8 picture stretched over the box, each pixel a sharp square."""
    return tag("image", x=round(x, 2), y=round(y, 2), width=round(width, 2), height=round(height, 2),
               href=png_data_uri(rgb), preserveAspectRatio="none", style="image-rendering:pixelated", **attrs)


# ---------------------------------------------------------------------------
# PNG


def png(rgb: np.ndarray) -> bytes:
    """A [H, W, 3] uint8 array as a PNG file: signature, header, one zlib stream of rows, end."""
    height, width, _ = rgb.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), rgb.reshape(height, -1)], axis=1)  # filter 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits per channel, RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 9))
            + chunk(b"IEND", b""))


def png_data_uri(rgb: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png(np.ascontiguousarray(rgb, dtype=np.uint8))).decode()


# ---------------------------------------------------------------------------
# Colours

# viridis at nine even steps (the colour map's published values): dark for low, yellow for high,
# readable in grey and by most colour-blind readers.
VIRIDIS = np.array([[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
                    [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37]], dtype=np.float64)
PADDING_GREY = (214, 214, 214)


def colour(values: np.ndarray, hidden: np.ndarray | None = None) -> np.ndarray:
    """Values in [0, 1] as viridis RGB ([...] -> [..., 3] uint8); where ``hidden`` is True, grey."""
    position = np.clip(np.nan_to_num(values), 0, 1) * (len(VIRIDIS) - 1)
    low = np.minimum(position.astype(int), len(VIRIDIS) - 2)
    part = (position - low)[..., None]
    rgb = np.rint(VIRIDIS[low] * (1 - part) + VIRIDIS[low + 1] * part).astype(np.uint8)
    if hidden is not None:
        rgb[np.broadcast_to(hidden, values.shape)] = PADDING_GREY
    return rgb


def colour_bar(x: float, y: float, width: float, height: float, low: str, high: str) -> str:
    """The colour scale as a strip with its two ends named."""
    strip = colour(np.linspace(0, 1, 64)[None, :])
    return (image(x, y, width, height, strip, class_="colour-bar") + text(x, y + height + 12, low, class_="small")
            + text(x + width, y + height + 12, high, class_="small", text_anchor="end"))


def pooled(values: np.ndarray, most: int, axis: int) -> np.ndarray:
    """At most ``most`` entries along ``axis``, each the largest of a block: a long input still
    fits the page, and a lone large value stays visible."""
    n = values.shape[axis]
    if n <= most:
        return values
    edges = np.linspace(0, n, most + 1).astype(int)
    return np.maximum.reduceat(values, edges[:-1], axis=axis)
