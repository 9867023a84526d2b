"""Local models for the embedded profile."""
