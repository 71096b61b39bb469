"""The one exception type of the evaluator.

Every problem with the user's input (missing ground-truth files, malformed
prediction lines, NaN scores, ...) raises :class:`EvaluationError` with a
one-line message that names the file (and line) or the image key involved.
The CLI turns it into ``error: <message>`` and a non-zero exit status.
"""


class EvaluationError(ValueError):
    """Bad input to the WIDER FACE evaluator (message is one line, user-facing)."""
