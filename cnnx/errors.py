"""The one exception type for errors a user can cause."""


class CnnxError(ValueError):
    """A bad file, spec or name: the message is fit to print as it is."""
