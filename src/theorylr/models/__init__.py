"""theorylr.models."""
