"""dowguard: a Denial-of-Wallet guard for serverless platforms."""

__version__ = "0.1.0"
