"""The annotation budget planner of paper 000: quality model, cost, Pareto front, plan."""
