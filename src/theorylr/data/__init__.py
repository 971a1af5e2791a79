"""theorylr.data."""
