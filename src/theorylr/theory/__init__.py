"""theorylr.theory."""
