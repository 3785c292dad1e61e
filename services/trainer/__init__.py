"""trainer: training jobs (built-in algorithms, bring-your-own scripts, containers)."""
