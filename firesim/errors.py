"""One exception type for bad user input, so every front end can print one line and exit 2."""


class UserError(ValueError):
    """Bad input from a user (file, flag, value). The message is one line naming the field and the reason."""
