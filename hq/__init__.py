"""hq package."""
