"""The error of service control, in a leaf module so that the parts which control a daemon of
their own (mda.dovecot) can raise it without importing service control itself."""


class ControlError(RuntimeError):
    """A control action failed; the message says which service and why."""
