"""Per-wire fake provider apps (see :mod:`polymodal.testing.fake_provider`)."""
