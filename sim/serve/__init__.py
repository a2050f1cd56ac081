"""Serving: requests, a deterministic continuous-batching scheduler, and the serving benchmark's figures."""
