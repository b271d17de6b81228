"""nurture: a code-first nurture scheduler that turns marketing-qualified leads into sales conversations."""

from __future__ import annotations

__version__ = "0.1.0"
