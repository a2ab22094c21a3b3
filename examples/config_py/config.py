"""Settings of train.py: a user's config module, the form the NAS design's projects use.

train.py imports this file; agentlab's trials get a copy with their values (comments and layout kept), and
`agentlab nas apply RUN` writes the best one back here.
"""

SEED = 0

data = {
    "samples": 3000,  # synthetic points, a fifth held out for validation
    "noise": 0.25,
}

training = {
    "lr": 0.5,  # a bold start: the search should find better
    "epochs": 20,
    "batch_size": 64,
    "l2": 1e-4,
}

model = dict(hidden=4, activation="tanh")
