"""The one exception type the toolkit raises for bad input.

Every reader and every CLI entry point turns malformed files, unknown ids and
inconsistent options into a :class:`InputError` whose message names the file,
image id or segment id at fault. The CLI prints that message on one line and
exits with code 2.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input: the message says which file / id and what is wrong."""


def where(path: object = None, image_id: object = None, segment_id: object = None) -> str:
    """A short location prefix such as ``file.json: image 7: segment 42: ``."""
    parts = []
    if path is not None:
        parts.append(str(path))
    if image_id is not None:
        parts.append(f"image {image_id}")
    if segment_id is not None:
        parts.append(f"segment {segment_id}")
    return "".join(p + ": " for p in parts)
