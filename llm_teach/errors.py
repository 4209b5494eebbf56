"""The one exception type the CLI turns into a single line and exit code 2.

Anything a user can cause (a bad file, a typo in a config key, an unknown model, a server
that keeps failing) raises `UserError` with a message that names the file/line or key.
Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input or environment, reported as one line (exit code 2)."""
