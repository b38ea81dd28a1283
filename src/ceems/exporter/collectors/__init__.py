"""Built-in collectors, one module each, registered as `ceems.collectors` entry points."""
