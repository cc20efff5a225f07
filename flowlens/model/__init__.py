"""Typed records shared by every layer, and the one error hierarchy."""
