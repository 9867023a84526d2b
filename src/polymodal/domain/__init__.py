"""Types and errors shared by every layer. No I/O, and nothing of ours is imported here."""
