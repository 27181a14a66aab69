"""User-facing errors: one line that says what was wrong and how to fix it."""


class ProbscaleError(Exception):
    """An error caused by the user's input or environment.

    ``str(err)`` is a single line: ``<what went wrong> -- fix: <how to fix it>``.
    The CLI prints it and exits with status 2; no traceback, nothing half-written.
    """

    def __init__(self, what: str, fix: str = ""):
        self.what = what.strip().replace("\n", " ")
        self.fix = fix.strip().replace("\n", " ")
        super().__init__(self.line())

    def line(self) -> str:
        return f"{self.what} -- fix: {self.fix}" if self.fix else self.what


class BundleError(ProbscaleError):
    """A bundle is missing, incomplete, tampered with or of an unknown format."""
