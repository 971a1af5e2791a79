"""theorylr.lipschitz."""
