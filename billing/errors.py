"""Domain errors raised by services; the API, the admin and commands turn them into clear messages."""


class BillingError(Exception):
    """A request the domain refuses. `field` names the input at fault, when there is one."""

    code = "invalid"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidTransition(BillingError):
    """A lifecycle action that the object's current state does not allow (HTTP 409)."""

    code = "invalid_transition"
