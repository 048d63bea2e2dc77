"""Label kinds a team can buy, their simulation from full ground truth, and their costs."""
