"""Benchmark helpers: start a real server, drive it with compiled load generators, measure the ceiling."""
