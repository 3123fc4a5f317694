"""Parameterized hardware blocks (Amaranth components) with their reference models."""
