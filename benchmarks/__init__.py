"""Benchmarks of otp against its peers, each printing one JSON line per result."""
