"""Dashboards, alert rules and the local live dashboard page, all generated from one source."""
