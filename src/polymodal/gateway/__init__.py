"""polymodal.gateway (later issues)."""
