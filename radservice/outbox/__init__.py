"""Durable delivery of signed report versions: one row per version per destination."""
