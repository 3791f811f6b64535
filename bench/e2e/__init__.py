"""Helpers of bench/end_to_end.py: the workload, the watchers, the syncrepl reference, the report."""
