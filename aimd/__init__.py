"""aimd: pre-downloads ML models onto PersistentVolumeClaims and shares each download."""

__version__ = "0.1.0"
