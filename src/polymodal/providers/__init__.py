"""One module per wire protocol; each translates to and from the domain types."""
