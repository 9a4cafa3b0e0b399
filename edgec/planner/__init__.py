"""The planner: candidate configurations, their evaluation order, and latency estimates."""
