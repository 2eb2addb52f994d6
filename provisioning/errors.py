"""The provisioning package's error root."""


class ProvisioningError(Exception):
    """Root of the errors provisioning raises on purpose."""


class BadBundle(ProvisioningError, ValueError):
    """A provisioning bundle that is tampered with, expired, for another node or incomplete."""


class PKIError(ProvisioningError, ValueError):
    """A certificate, CSR or CA file that is missing, invalid or does not match."""


class BadRequest(ProvisioningError, ValueError):
    """An enrolment or key-rotation request file that is malformed, forged or not acceptable."""


class StateError(ProvisioningError, RuntimeError):
    """A step run out of order: HQ not initialised, keys missing, node already enrolled, ..."""


class ReloadFailed(ProvisioningError):
    """A step that changed what the broker must reread (a revocation, a CRL) is done, and the
    broker reload command that should have followed it failed. `done` is the finished step's
    result: the caller reports it before the failure."""

    def __init__(self, message: str, done: object = None) -> None:
        super().__init__(message)
        self.done = done
