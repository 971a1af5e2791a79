"""theorylr.estimate."""
