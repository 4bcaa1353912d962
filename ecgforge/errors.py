"""The one base class of every error a user can cause and fix.

The CLI prints such errors as they are (one line each, naming the file and field) and exits with code 2;
anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem in the user's input (recipe, data, paths); ``str(err)`` is the message to print."""


class Failure(Exception):
    """Not the user's mistake but not a bug either (a helper process died, the system ran out of something):
    ``str(err)`` is one line saying what happened and what to do; the CLI prints it and exits with code 1."""


def resolved_against(path: object) -> str:
    """What to append to "PATH: not found" so that a relative path says where it was looked for ("" for an
    absolute one): recipes' relative paths resolve against the working directory, not the recipe's folder."""
    import os

    p = os.fspath(path) if isinstance(path, (str, os.PathLike)) else str(path)
    if os.path.isabs(p):
        return ""
    cwd = os.getcwd()
    return f" (a relative path, resolved against the working directory {cwd}: {os.path.join(cwd, p)})"
