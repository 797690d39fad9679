"""Routing: which pod each request or stream message goes to, and how it gets there."""
