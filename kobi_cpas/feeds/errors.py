"""Exceptions of the feed layer; messages are meant for people (they name the file and the problem)."""

from __future__ import annotations


class FeedError(Exception):
    """Base class of every feed-layer error."""


class FeedFileError(FeedError):
    """The feed file cannot be used as a whole (encoding, delimiter, missing columns, line too long...).

    ``path`` is the file, ``line_number`` the 1-based line (header = line 1, a quoted multi-line value
    counts as one line) when the problem is on one line, ``columns`` the columns concerned, if any.
    """

    def __init__(
        self,
        path: object,
        problem: str,
        *,
        line_number: int | None = None,
        byte_offset: int | None = None,
        columns: tuple[str, ...] = (),
    ) -> None:
        self.path = str(path)
        self.problem = problem
        self.line_number = line_number
        self.byte_offset = byte_offset
        self.columns = tuple(columns)
        super().__init__(f"feed file {self.path}: {problem}")


class FeedFetchError(FeedError):
    """The feed source could not be downloaded (HTTP error, network error, truncated body)."""
