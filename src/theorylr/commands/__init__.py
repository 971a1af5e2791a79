"""theorylr.commands."""
