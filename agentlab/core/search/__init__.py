"""Ask/tell search shared by `nas` and `compress`: spaces, planners, evaluator, state, the loop."""
