"""Errors a user can act on: the CLI prints them as one line, no traceback."""


class UserError(Exception):
    """Bad input or state the user can fix; the message says what to do."""

    exit_code = 1


class ModelFilesError(UserError):
    """Model files missing, corrupt, or not the files the manifest describes."""


class VideoError(UserError):
    """A video that cannot be read or decoded."""
