"""Throughput benchmarks of flanx vs Hugging Face torch T5: `python -m benchmarks` (see BENCHMARKS.md)."""
