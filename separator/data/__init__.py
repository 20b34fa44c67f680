"""Data sets: MUSDB18-HQ layout indexing and loaders, the synthetic generator."""
