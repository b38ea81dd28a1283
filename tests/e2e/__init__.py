"""End-to-end tests: the whole stack over a simulated or a real cluster."""
