"""Dora grids: `dora grid NAME` runs grids/NAME.py."""
