"""The one exception the rig raises: a server could not be set up, started or reached."""


class RigError(RuntimeError):
    """A rig server is missing, misconfigured, or failed to start."""
