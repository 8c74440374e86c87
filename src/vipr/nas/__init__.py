"""Differentiable architecture search: DARTS, P-DARTS, PC-DARTS and GOLD-NAS over one search space."""
