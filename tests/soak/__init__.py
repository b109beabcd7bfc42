"""Long-running tests: many runs of the real command against a faulty emulated platform."""
