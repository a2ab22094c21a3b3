"""The example configs the docs name: installed as the package `agentlab.configs` (`agentlab config examples`)."""
