"""The edge fleet manager: fleets, devices, compiled and signed packages, staged rollouts."""
