# The shell face lives in the top-level cli/ folder but installs as the package `agentlab.cli`, the example configs
# of configs/ install as `agentlab.configs` (`agentlab config examples` writes them out for a user without a checkout),
# and the example projects of examples/ (the docs' `nas -c examples/own_code/nas.yaml`, ...) as `agentlab.examples`;
# see "Layout" in docs/design/architecture.md. pyproject.toml cannot combine package discovery with these mappings, so
# they are done here.
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["agentlab", "agentlab.*"]) + ["agentlab.cli", "agentlab.configs",
                                                                  "agentlab.examples"],
    package_dir={"agentlab.cli": "cli", "agentlab.configs": "configs", "agentlab.examples": "examples"},
)
