"""The example projects the docs name (examples/own_code, examples/config_py, ...): installed as the package
`agentlab.examples` so that a wheel carries them (setup.py maps the folder). Nothing here is imported."""
