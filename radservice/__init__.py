"""radservice: dictation and reporting for radiology departments."""

__version__ = "0.1.0"
