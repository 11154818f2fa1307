"""Many runs: the plan (grid to runs, the record) and its execution on Ray."""
