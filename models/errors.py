"""The one exception type for bad input, shared by every layer.

``UserInputError`` means "what the caller gave is wrong" (a flag, a file, a model name, a
request field), never "the program is wrong". The command line prints it as one line,
``error: …``, and exits 2; anything else that escapes a command is reported as an internal
error (exit 70) with a hint to file a bug. Domain errors that are about input
(``models.checkpoint.CheckpointError``, ``export.netlist.UnsupportedCircuit``, pydantic's
``ValidationError``, …) count as user errors too; new ones should subclass this type.

It subclasses ``ValueError`` so callers that already catch ``ValueError`` keep working.
"""
from __future__ import annotations


class UserInputError(ValueError):
    """Bad input: reported as one line naming what is wrong (CLI exit code 2, HTTP 4xx)."""
