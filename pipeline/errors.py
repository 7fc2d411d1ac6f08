"""Errors a user can cause. The UI shows them as `gr.Error`, the CLI as one line and exit 2."""


class UserInputError(ValueError):
    """Bad input the user can fix: the message says what to do."""
