"""ztctl: keep ZeroTier network controllers in line with an access portal."""

__version__ = "0.1.0"
