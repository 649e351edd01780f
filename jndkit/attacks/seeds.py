"""Seed methods mnd (seed 001), hvs (seed 002) and cv (seed 004), registered into the method registry."""
