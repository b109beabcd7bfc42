"""Filenames for generated assets, including the hostile ones real uploaders produce.

A filename is whatever the uploader called the file; the engine must never trust it as a path.
Every seventh asset (index % 7 == 3) takes the next name from :data:`NASTY_NAMES`, so even a
200-asset dataset carries each of them, and some ordinary names repeat the previous asset's; the
others are ordinary, unique names, some in sub-folders. With ``nasty=False`` every name is an
ordinary, unique, relative ASCII path. Names in the table are exactly what is listed (the
``{i}`` placeholder becomes the asset index) so tests can assert on them.
"""

from __future__ import annotations

__all__ = ["NASTY_NAMES", "content_type_for", "filename_for"]

NASTY_NAMES: tuple[str, ...] = (
    "../escape.jpg",
    "../../../../etc/passwd",
    "/absolute/path/img.jpg",
    "sub/dir/nested_{i}.jpg",
    "with space {i}.jpg",
    "日本語の画像_{i}.jpg",
    "ñandú-{i}.png",
    "",
    "x" * 300 + ".jpg",
    "é" * 200 + ".png",  # 400 bytes in UTF-8, 201 characters
    "CON",
    "aux.txt",
    "nul.jpg",
    "COM1.png",
    "LPT9",
    ".hidden.jpg",
    ".",
    "..",
    "dup.jpg",
    "a/../../b.jpg",
    "./dot/./seg.jpg",
    "sub//double//slash.jpg",
    "back\\slash\\win.jpg",
    "trailing-dot.",
    "trailing-space ",
    "Case.JPG",
    "case.jpg",
    "e\u0301-nfd.jpg",  # NFD spelling of the next one: equal after NFC normalisation
    "\u00e9-nfd.jpg",
    "colon:star*quest?.jpg",
    "tab\tand\nnewline.jpg",
    "dup.jpg",
    "sub/",
)


def filename_for(index: int, nasty: bool) -> str:
    """The filename of generated asset ``index``."""
    if nasty and index % 7 == 3:
        return NASTY_NAMES[(index // 7) % len(NASTY_NAMES)].replace("{i}", str(index))
    if nasty and index % 11 == 5:
        # A plain duplicate of the previous asset's name: same filename, different content.
        return f"img_{index - 1:06d}.jpg"
    if index % 5 == 1:
        return f"folder_{index % 3}/img_{index:06d}.png"
    return f"img_{index:06d}.jpg"


def content_type_for(filename: str) -> tuple[str, str]:
    """``(content_type, object extension)`` for a filename, as the platform infers it."""
    lowered = filename.lower()
    if lowered.endswith(".png"):
        return "image/png", ".png"
    if lowered.endswith((".tif", ".tiff")):
        return "image/tiff", ".tiff"
    if lowered.endswith(".webp"):
        return "image/webp", ".webp"
    return "image/jpeg", ".jpg"
