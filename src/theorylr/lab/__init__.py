"""theorylr.lab."""
