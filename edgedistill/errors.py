"""The two failures a user sees: their input is wrong (exit 2), or we refused our own result (exit 3)."""


class UserError(Exception):
    """Bad input: recipe, arguments, paths, target. Shown as one line; exit status 2."""

    exit_code = 2


class RefusedError(Exception):
    """The pipeline refused its own result (e.g. an export disagrees with its model). Exit status 3."""

    exit_code = 3
