"""deployer: endpoint configs, variants, weights and rollouts with automatic rollback."""
