"""sipwake: a SIP registrar and proxy that wakes sleeping mobile apps with push (RFC 8599)."""

__version__ = "0.1.0"
