"""polymodal.rag (later issues)."""
