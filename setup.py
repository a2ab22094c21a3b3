# The shell face lives in the top-level cli/ folder but installs as the package `agentlab.cli` (see "Layout" in
# docs/design/architecture.md); pyproject.toml cannot combine package discovery with that mapping, so it is done here.
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["agentlab", "agentlab.*"]) + ["agentlab.cli"],
    package_dir={"agentlab.cli": "cli"},
)
