"""GRPO engine: group-relative policy optimisation for any policy that samples and scores completions."""
