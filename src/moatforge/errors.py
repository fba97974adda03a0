"""One exception type for every user-facing problem.

The CLI turns it into a single line and a non-zero exit, so the message itself must say what is wrong, where,
and how to fix it; anything else that escapes is a bug and keeps its traceback.
"""


class MoatforgeError(Exception):
    """A problem with the user's input or environment, worded for the user."""
