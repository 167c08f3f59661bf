"""The one reader of id-list files (wnids or class names, one a line) that every command uses."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Container, Iterable, Sequence
from pathlib import Path

from kgzsl.errors import KgzslError


# ------------------------------------------------------------------------------------- id lists
class IdList(list):
    """The entries of an id-list file in file order, remembering the file and the line of each.

    To its consumers it is a plain ``list[str]``; a caller that resolves the entries (against a graph,
    a taxonomy, a predictions file) calls :meth:`require_known` so an unknown entry is reported with
    its file and line instead of being dropped.
    """

    def __init__(self, entries: Iterable[str] = (), path: str | os.PathLike = "id list", what: str = "id list",
                 lines: Sequence[int] | None = None) -> None:
        super().__init__(entries)
        self.path = Path(path)
        self.what = what
        self.lines = list(lines) if lines is not None else list(range(1, len(self) + 1))

    def where(self, entry: str) -> str:
        """``FILE:LINE`` of ``entry`` (the file alone if it is not listed)."""
        line = dict(zip(self, self.lines)).get(entry)
        return f"{self.path}:{line}" if line else str(self.path)

    def require_known(self, known: Container[str], against: str, hint: Callable[[str], str] | None = None) -> None:
        """Raise a KgzslError naming the file, line and entry of the first entry not in ``known``.

        ``against`` completes "... is not ___" (e.g. "a node of graph G"); ``hint(entry)`` may add advice.
        """
        unknown = [(entry, line) for entry, line in zip(self, self.lines) if entry not in known]
        if not unknown:
            return
        entry, line = unknown[0]
        more = f" ({len(unknown) - 1} more entries of the file are unknown too)" if len(unknown) > 1 else ""
        advice = (hint(entry) if hint else "") or ""
        raise KgzslError(
            f"{self.path}:{line}: {self.what} entry {entry!r} is not {against}{more}{advice}: fix or remove that line"
        )


_COMMENT = re.compile(r"(^|\s)#.*$")


_WNID_THEN_TEXT = re.compile(r"^n\d{8}\s")


def read_id_list(path: str | os.PathLike, what: str = "id list") -> IdList:
    """Read a list of class ids (wnids or class names), one a line: the rule for every list kgzsl reads.

    Each entry is the whole line, stripped, so ``frying pan`` is one entry. Blank lines are skipped;
    ``#`` starts a comment at the start of a line or after whitespace (``n03400231  # frying pan``), so
    only a ``#`` inside a word (``C#``) is kept. An entry listed twice is an error naming both lines, as
    is a wnid followed by more text (``n01440764 tench``, the layout of ImageNet's synset mapping):
    read whole, that line would be an id nothing knows.
    """
    path = Path(path)
    if path.is_dir():
        raise KgzslError(f"{what} file {path} is a folder: give a text file with one id a line")
    if not path.is_file():
        raise KgzslError(f"{what} file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise KgzslError(f"{what} file {path} is not UTF-8 text: give a text file with one id a line") from None
    entries: list[str] = []
    lines: list[int] = []
    first_line: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        entry = _COMMENT.sub("", raw).strip()
        if not entry:
            continue
        if _WNID_THEN_TEXT.match(entry):
            raise KgzslError(
                f"{path}:{number}: {what} line {entry!r} holds a wnid followed by more text: one id a line "
                f"(put a note after ' # ')"
            )
        if entry in first_line:
            raise KgzslError(
                f"{what} file {path} lists {entry} twice (lines {first_line[entry]} and {number}): remove one"
            )
        first_line[entry] = number
        entries.append(entry)
        lines.append(number)
    if not entries:
        raise KgzslError(f"{what} file {path} is empty: it needs one id a line")
    return IdList(entries, path, what, lines)
