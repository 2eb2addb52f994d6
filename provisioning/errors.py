"""The provisioning package's error root."""


class ProvisioningError(Exception):
    """Root of the errors provisioning raises on purpose."""


class BadBundle(ProvisioningError, ValueError):
    """A provisioning bundle that is tampered with, expired, for another node or incomplete."""


class PKIError(ProvisioningError, ValueError):
    """A certificate, CSR or CA file that is missing, invalid or does not match."""
