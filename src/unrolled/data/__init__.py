"""Data handling: each kind of data (text, series, …) has its own module."""
