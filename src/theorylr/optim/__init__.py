"""theorylr.optim."""
