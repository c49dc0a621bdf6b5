"""Errors meant for the person at the keyboard: their message is the whole story, no traceback needed."""


class UserError(Exception):
    """A mistake the user can fix (bad input, missing access); shown as a message, never as a traceback."""


class InvalidRequest(UserError):
    """A generation request with a value out of range or of the wrong shape."""


class ModelAccessError(UserError):
    """A model that cannot be found, reached or opened with the credentials at hand."""


class SetupError(UserError):
    """A requested option that this machine cannot provide (missing package, unsupported device)."""


class OutOfMemory(UserError):
    """The device ran out of memory for one request; memory was released and the engine still works."""


class Cancelled(Exception):
    """A generation stopped on request before it finished."""
