"""theorylr: learning rates derived from convergence theory, and a lab that checks whether they pay off."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
