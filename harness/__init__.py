"""rfbench harness: cases, error metrics and tolerances, the correctness runner, reports, CLI."""
