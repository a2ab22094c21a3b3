"""agentlab compress (being built; the command is not registered yet): real compression experiments on a causal LM
(quantization, pruning, recovery), each measured on the backend it will run on. Importing this package is light."""
