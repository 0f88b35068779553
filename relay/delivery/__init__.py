"""Delivery: lanes, batching, ordering, retries, and the SSRF-safe HTTP client."""
