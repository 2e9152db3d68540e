"""Benchmarks run by `make bench` (`python -m bench`): each bench_*.py module has
`run(results_dir: Path) -> dict`; results land in bench/results/<name>.json and a markdown table
in bench/results/README.md."""
