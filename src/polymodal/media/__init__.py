"""polymodal.media (later issues)."""
