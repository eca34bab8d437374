"""Electronic advance data (EAD): S10 identifiers and CN 23 declaration records."""
