"""The demo workload and the end-to-end demo run."""
