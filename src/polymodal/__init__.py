"""polymodal: one API in front of many model providers, for multi-tenant generative-AI SaaS."""

__version__ = "0.1.0"
